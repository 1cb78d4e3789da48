"""Label propagation at full DAVIS 480p: the fast streaming `propagate` against the reference strategy.

The reference strategy is `propagate_reference` (as the official code does it: the 21-entry context
stacked for one batched einsum per chunk of 100 query cells, the dense (hw)² additive radius mask, top-k over all
21·h·w candidates, softmax). Both run on the same res4 features of real frames (feature map 60×107, 512-d), each in
its own subprocess, one after the other in this run. Printed: time per frame, peak memory (peak RSS of the
subprocess, and its growth over the RSS just before propagation starts; CUDA max allocated on a GPU), the ratios,
the label-map agreement of the two, and the theoretical multiply-accumulates per frame.

    .venv/bin/python bench/propagation.py                      # blackswan, 24 frames, random-init encoder, CPU
    .venv/bin/python bench/propagation.py --checkpoint CKPT --frames 30 --device cuda

Features are computed once (encoder forward, not timed against propagation) and streamed from disk, one file per
frame, so neither method holds the video. Use `--random-features` to skip the encoder.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dense_ulearn.data import DavisDataset, normalize
from dense_ulearn.options import shared_paths
from dense_ulearn.encoder import build_encoder, load_encoder
from dense_ulearn.propagate import (PropagationConfig, propagate, propagate_reference, propagation_macs,
                                    reference_groups, sequence_objects, upsample_labels)

METHODS = {"fast": propagate, "reference": propagate_reference}


def rss_mib() -> float:
    "Current resident set size of this process (MiB)."
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    "Peak resident set size of this process so far (MiB; Linux reports KiB)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- worker: one method in its own process
def run_worker(args) -> None:
    work, device = Path(args.dir), torch.device(args.device)
    meta = json.loads((work / "meta.json").read_text())
    first = {int(t0): torch.load(work / f"first_{t0}.pt") for t0 in meta["first"]}
    files = sorted(work.glob("feat_*.pt"))
    loading = [0.0]

    def stream():  # one feature map at a time; time spent loading is subtracted from the method's time
        for f in files:
            t0 = time.perf_counter()
            x = torch.load(f).to(device)
            loading[0] += time.perf_counter() - t0
            yield x

    cfg = PropagationConfig()
    groups = reference_groups(first, meta["channels"], tuple(meta["feat_size"]), torch.float32, device)
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats(); base_gpu = torch.cuda.memory_allocated()
    base = rss_mib()
    times, labels = [], []
    it = METHODS[args.worker](stream(), groups, cfg)
    while True:
        loading[0] = 0.0
        t0 = time.perf_counter()
        try: soft = next(it)
        except StopIteration: break
        if device.type == "cuda": torch.cuda.synchronize()
        times.append(time.perf_counter() - t0 - loading[0])
        labels.append(upsample_labels(soft, tuple(meta["frame_size"])).to(torch.uint8).cpu().numpy())
        print(f"  {args.worker} frame {len(times) - 1}: {times[-1]:.2f} s", file=sys.stderr, flush=True)
    np.save(work / f"labels_{args.worker}.npy", np.stack(labels))
    out = dict(times=times, base_rss=base, peak_rss=peak_rss_mib())
    if device.type == "cuda": out.update(peak_gpu=(torch.cuda.max_memory_allocated() - base_gpu) / 2 ** 20)
    print(json.dumps(out))


# ---------------------------------------------------------------- parent: features, both workers, the table
def write_features(args, work: Path) -> dict:
    "res4 features of the first frames of a real sequence (or random ones), one file per frame; returns meta."
    sp = shared_paths()
    if sp is None: raise SystemExit("shared DAVIS data not found (set DENSE_ULEARN_DATA)")
    seq = DavisDataset(sp.davis, sequences=[args.sequence])[0]
    n = min(args.frames, len(seq))
    ids, first = sequence_objects(seq)
    model = (load_encoder(args.checkpoint) if args.checkpoint else build_encoder(args.seed)).eval()
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    for t in range(n):
        if args.random_features:
            f = torch.nn.functional.normalize(torch.randn(512, *feature_size(seq.size), generator=g), dim=0)
        else:
            with torch.no_grad(): f = model.res4_features(normalize(torch.from_numpy(seq.frame(t)).permute(2, 0, 1)[None]))[0]
        torch.save(f.clone(), work / f"feat_{t:05d}.pt")
    encode = (time.perf_counter() - t0) / n
    for t0_, m in first.items(): torch.save(m, work / f"first_{t0_}.pt")
    meta = dict(first=sorted(first), channels=len(ids) + 1, feat_size=list(f.shape[-2:]), frame_size=list(seq.size),
                frames=n, sequence=seq.name, encode_s=encode, features="random" if args.random_features else
                ("checkpoint " + str(args.checkpoint) if args.checkpoint else f"random-init encoder (seed {args.seed})"))
    (work / "meta.json").write_text(json.dumps(meta))
    return meta


def feature_size(size):
    from dense_ulearn.encoder import feature_size as side
    return side(size[0]), side(size[1])


def run_method(method: str, work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--dir", str(work), "--device", args.device]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if r.returncode != 0: raise SystemExit(f"{method} worker failed ({r.returncode})")
    return json.loads(r.stdout.strip().splitlines()[-1])


def report(meta: dict, res: dict, work: Path, args) -> None:
    cfg = PropagationConfig()
    h, w = meta["feat_size"]
    steady = [t for t in range(1, meta["frames"]) if t > cfg.context]  # full, distinct 20-frame context
    def per_frame(r, frames): return float(np.mean([r["times"][t] for t in frames])) if frames else float("nan")
    print(f"\n{meta['sequence']}: {meta['frames']} frames {meta['frame_size'][0]}x{meta['frame_size'][1]}, features "
          f"{512}x{h}x{w} from {meta['features']} (encoder {meta['encode_s']:.2f} s/frame, not in the timings), "
          f"device {args.device}, torch threads {args.threads or torch.get_num_threads()}")
    print(f"config: topk={cfg.topk} radius={cfg.radius} temperature={cfg.temperature} context={cfg.context} "
          f"reference chunk={cfg.query_chunk} fast tile={cfg.tile}")
    rows = [("time per frame, frames 1..N-1 (s)", lambda r: per_frame(r, range(1, meta["frames"])), "{:.2f}"),
            (f"time per frame, frames {cfg.context + 1}..N-1 (steady state, s)", lambda r: per_frame(r, steady), "{:.2f}"),
            ("peak RSS of the process (MiB)", lambda r: r["peak_rss"], "{:.0f}"),
            ("RSS before propagation (MiB)", lambda r: r["base_rss"], "{:.0f}"),
            ("peak RSS growth during propagation (MiB)", lambda r: r["peak_rss"] - r["base_rss"], "{:.0f}")]
    if "peak_gpu" in res["fast"]: rows.append(("CUDA peak allocated during propagation (MiB)", lambda r: r["peak_gpu"], "{:.0f}"))
    print(f"\n{'':58s}{'fast':>10s}{'reference':>12s}{'ratio ref/fast':>16s}")
    for name, get, fmt in rows:
        a, b = get(res["fast"]), get(res["reference"])
        print(f"{name:58s}{fmt.format(a):>10s}{fmt.format(b):>12s}{b / a:>15.2f}x")
    fast, ref = np.load(work / "labels_fast.npy"), np.load(work / "labels_reference.npy")
    diff = int((fast != ref).sum())
    print(f"\nlabel maps (float32, {fast.shape[0]} frames at {fast.shape[1]}x{fast.shape[2]}): {fast.size - diff} of "
          f"{fast.size} pixels agree ({1 - diff / fast.size:.5%}); frames with any difference: "
          f"{int((fast != ref).reshape(len(fast), -1).any(1).sum())}")
    macs = propagation_macs(h, w, 512, cfg)
    print(f"theoretical MACs per frame: reference {macs['reference'] / 1e9:.1f} G, fast minimum "
          f"{macs['fast_minimum'] / 1e9:.1f} G, fast as tiled {macs['fast_tiled'] / 1e9:.1f} G "
          f"(reference / fast tiled = {macs['reference'] / macs['fast_tiled']:.1f}x)")
    t_fast, t_ref = per_frame(res["fast"], steady or range(1, meta["frames"])), per_frame(res["reference"], steady or range(1, meta["frames"]))
    print(f"achieved: reference {macs['reference'] / t_ref / 1e9:.1f} GMAC/s, fast {macs['fast_tiled'] / t_fast / 1e9:.1f} GMAC/s (tiled count)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequence", default="blackswan")
    p.add_argument("--frames", type=int, default=24, help="frames to propagate (> 21 reaches the steady state)")
    p.add_argument("--checkpoint", type=Path, default=None, help="encoder checkpoint (default: random init)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random-features", action="store_true", help="random unit features instead of the encoder's")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the workers (default: torch's)")
    p.add_argument("--worker", choices=sorted(METHODS), help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker: return run_worker(args)
    with tempfile.TemporaryDirectory(prefix="bench-propagation-") as d:
        work = Path(d)
        meta = write_features(args, work)
        res = {}
        for m in ("fast", "reference"):
            print(f"running {m} ...", file=sys.stderr, flush=True)
            res[m] = run_method(m, work, args)
        report(meta, res, work, args)


if __name__ == "__main__":
    main()
