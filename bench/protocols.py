"""Peak memory of label propagation per protocol: the fast streaming version against the literal dense reference.

For each preset of `dense_ulearn.protocols` (`dul`, whose fast version is notebook 05's `propagate`, and `dino`, whose
fast version is `propagate_protocol`) and each frame size (DAVIS 480p as the preset resizes it, and a wide 480×1152
clip), one subprocess per measurement streams the features of a cheap stand-in extractor (seeded random unit vectors,
64 channels, stride 8: no network, so only propagation is measured) through one method and reports the growth of
its resident memory over the level just before propagation (peak RSS − RSS at start) and the time per frame in the
steady state. The fast version also runs a 100-frame clip, to show that its memory does not grow with the length.

    .venv/bin/python bench/protocols.py                 # everything (about 25 minutes on 2 busy CPU cores)
    .venv/bin/python bench/protocols.py --quick         # 480p only, short clips

The reference runs only as many frames as its context needs to fill (its memory is per frame, dominated by the
dense E·(hw)² affinity), and is skipped where it would need more than --max-reference-gib.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dense_ulearn.propagate import PropagationConfig, propagate, propagate_reference, reference_groups
from dense_ulearn.protocols import PROTOCOLS, crw_config, propagate_protocol, propagate_protocol_reference

CHANNELS, STRIDE = 64, 8
SIZES = {"480p": (480, 854), "480x1152": (480, 1152)}


def rss_mib() -> float:
    "Current resident set size of this process (MiB)."
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def feature_size(preset: str, size: tuple[int, int]) -> tuple[int, int]:
    "The stand-in's feature map for a frame size, after the preset's resize (480p under dino: 480×832)."
    H, W = PROTOCOLS[preset].resize.input_size(size) if size == SIZES["480p"] else size
    return H // STRIDE, W // STRIDE


def stand_in_features(T: int, h: int, w: int):
    "Seeded random unit features [C,h,w], one frame at a time (the clip is never held)."
    g = torch.Generator().manual_seed(0)
    for _ in range(T): yield F.normalize(torch.randn(CHANNELS, h, w, generator=g), dim=0)


def two_objects(h: int, w: int) -> torch.Tensor:
    "Channel map [h,w] with two rectangles."
    m = torch.zeros(h, w, dtype=torch.long); m[h // 4:h // 2, w // 4:w // 2] = 1; m[h // 2:3 * h // 4, w // 2:3 * w // 4] = 2
    return m


def run_worker(args) -> None:
    torch.set_num_threads(args.threads)
    p = PROTOCOLS[args.preset]
    h, w = args.h, args.w
    groups = reference_groups({0: two_objects(h, w)}, 3, (h, w))
    if args.preset == "dul":
        cfg = crw_config(p, PropagationConfig())
        run = (propagate_reference if args.method == "reference" else propagate)(stand_in_features(args.frames, h, w), groups, cfg)
    else:
        method = propagate_protocol_reference if args.method == "reference" else propagate_protocol
        run = method(stand_in_features(args.frames, h, w), groups[0].labels, p)
    base, times = rss_mib(), []
    t0 = time.perf_counter()
    for _ in run:
        times.append(time.perf_counter() - t0); t0 = time.perf_counter()
    steady = times[-min(5, len(times) - 1):] if len(times) > 1 else times
    print(json.dumps({"added_mib": peak_rss_mib() - base, "peak_mib": peak_rss_mib(), "s_per_frame": sum(steady) / len(steady)}))


def measure(preset: str, size_name: str, method: str, frames: int, threads: int) -> dict:
    h, w = feature_size(preset, SIZES[size_name])
    cmd = [sys.executable, __file__, "--worker", "--preset", preset, "--method", method, "--frames", str(frames),
           "--h", str(h), "--w", str(w), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {"preset": preset, "size": size_name, "features": f"{h}x{w}", "method": method, "frames": frames, **json.loads(out.splitlines()[-1])}


def reference_frames(preset: str) -> int:
    """Frames the reference runs: until its per-frame working set is at full size. dul's stacks all 21 entries
    (duplicates included) from frame 1 on, so 4 frames reach its peak but for the stored frames (≤ 21 feature maps,
    46 MiB at 480×1152); dino's context grows to 8 entries at frame 8, so it runs 10."""
    return 4 if PROTOCOLS[preset].context_fill == "clamped" else PROTOCOLS[preset].context + 3


def reference_gib(preset: str, h: int, w: int) -> float:
    "The reference's dense affinity alone: entries × (hw)² fp32 numbers."
    entries = PROTOCOLS[preset].context + 1
    return entries * (h * w) ** 2 * 4 / 2 ** 30


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--preset"); ap.add_argument("--method"); ap.add_argument("--frames", type=int)
    ap.add_argument("--h", type=int); ap.add_argument("--w", type=int)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per measurement (default: 1)")
    ap.add_argument("--quick", action="store_true", help="480p only, 30-frame clips")
    ap.add_argument("--long", type=int, default=100, help="frames of the long clip (default: 100)")
    ap.add_argument("--max-reference-gib", type=float, default=8.0, help="skip a reference whose affinity alone exceeds this")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.worker: return run_worker(args)
    rows = []
    for size_name in (["480p"] if args.quick else list(SIZES)):
        for preset in ("dul", "dino"):
            h, w = feature_size(preset, SIZES[size_name])
            filled = PROTOCOLS[preset].context + 3  # the context full, and a few frames more
            runs = [("fast", filled), ("fast", 30 if args.quick else args.long)]
            if reference_gib(preset, h, w) <= args.max_reference_gib: runs.insert(0, ("reference", reference_frames(preset)))
            for method, frames in runs:
                row = measure(preset, size_name, method, frames, args.threads)
                rows.append(row)
                print(f"{preset:>4} {size_name:>8} {row['features']:>7} {method:>9} {frames:>4} frames: "
                      f"+{row['added_mib']:7.0f} MiB (peak RSS {row['peak_mib']:6.0f} MiB), {row['s_per_frame']:.2f} s/frame", flush=True)
    if args.json: args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
