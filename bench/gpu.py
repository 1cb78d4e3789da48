"""Speed and memory on a GPU (CPU fallback), side by side with the official code's figures (run unchanged by this project on one H100).

Measured, each in its own process (a fresh interpreter on CUDA; a fork of this one on the CPU, which never runs
torch itself, so each child's peak RSS belongs to its measurement plus the imported libraries):

  train ...      the network step as `dense_ulearn.train` runs it (`train_step`: `compute_losses` passes A/B, backward,
                 gradient norm, optimiser and scheduler step) on a fixed in-memory batch of B×T×crop² clips, built with
                 the training module's own `speed_options`, `initial_encoder`, `build_optimizer`, `build_scheduler` and
                 `training_module`; rows: fp32 (all speed options off; PyTorch's default Adam, foreach on CUDA) and
                 bf16 autocast + channels-last + fused Adam (+ torch.compile with --compile);
  end-to-end     the same step fed by the training data pipeline (`training_videos` on --video-root, `clip_dataset`,
                 `EpochBatchSampler`, `make_loader`: worker processes decode and augment, pinned memory, prefetch), the
                 device's default speed options (`speed_options` with nothing forced);
  loader only    that pipeline alone (batches per second, copied to the device), to show which side bounds the step;
  propagate ...  `propagate_sequence` (frame decode, res4 features, local-window propagation, upsampling, label maps)
                 on a few real DAVIS sequences (--davis-root) at --scale (1 = full 480p), in fp32 and in reduced
                 precision (`PropagationConfig.precision`: the encoder under autocast, features, affinities and top-k in
                 bf16/fp16, soft masks in fp32); the reduced-precision masks are compared pixel by pixel with the fp32 ones.

Speed is it/s (training) or ms per frame (propagation) over the timed part after a warm-up; memory is
`torch.cuda.max_memory_allocated` over the timed part on CUDA, the peak RSS of the measuring process on the CPU.
The table (markdown) puts each row beside the reference figure (official code, one H100) and gives the ratios:
speed as "× the reference" (>1: faster), memory as ours ÷ reference. On the CPU the ratios compare a few CPU cores
with an H100 and at smaller sizes: they only show the size of the gap.

    python bench/gpu.py                                   # CUDA if available: the paper's 16×5×256², full 480p
    python bench/gpu.py --device cpu                      # CPU sizes (see --help for the defaults)
    python bench/gpu.py --quick --device cpu              # smoke test: tiny sizes, ~30 s
    python bench/gpu.py --video-root V --davis-root D --compile --json out.json

The real-data rows are skipped (and say why) when no data is found; --no-real-data skips them on purpose.
Exit status: 0 when every row was measured or skipped, 1 when a measurement failed (its row says why).
See bench/README.md for running it on the device machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from dense_ulearn.cli import add_data_flags
from dense_ulearn.data import DavisDataset
from dense_ulearn.options import find_data, resolve_device
from dense_ulearn.encoder import build_encoder, load_encoder
from dense_ulearn.propagate import PRECISIONS, PropagationConfig, propagate_sequence
from dense_ulearn.config import load_config
from dense_ulearn.distributed import DistInfo
from dense_ulearn.train import (EpochBatchSampler, TrainHooks, build_optimizer, build_scheduler, clip_dataset,
                                initial_encoder, make_loader, speed_options, train_step, training_device,
                                training_module, training_videos)

GIB = 2 ** 30
# The official code, unchanged, run by this project on one H100 (torch 2.11, PyTorch's default TF32 for cuDNN convolutions)
REFERENCE = dict(
    train=dict(it_s=12.1, mem_gib=(9.5, 9.5), text="12.1 it/s, 9.5 GiB"),
    e2e=dict(it_s=3.7, mem_gib=None, text="3.7 it/s (PIL-bound)"),
    prop=dict(ms=80.0, mem_gib=(1.2, 1.35), text="≈80 ms/frame, 1.2–1.35 GiB"),
)
ZOOM, SHIFT = 0.75, 0.1  # the fixed aug-view affine of the in-memory batch: flipped zoom-in, shifted centre
WARMUP_FRAMES = 3  # propagation warm-up: this many frames of the first sequence, not timed
COMPILE_WARMUP = 3  # at least this many warm-up steps when torch.compile is on (the first call compiles)
RESULT_TAG = "BENCH-GPU-RESULT "  # prefix of the child's JSON line (subprocess isolation)

# sizes per profile; a flag given on the command line wins
PROFILES = {
    "cuda": dict(threads=0, batch=16, frames=5, crop=256, iters=30, warmup=5, e2e_iters=150, e2e_warmup=20, workers=8,
                 prefetch=4, clips_per_video=40, prop_frames=None, scale=1.0,
                 sequences="blackswan,car-shadow,drift-straight", prop_dtypes="fp32,bf16,fp16"),
    "cpu": dict(threads=0, batch=4, frames=5, crop=128, iters=3, warmup=1, e2e_iters=3, e2e_warmup=1, workers=1,
                prefetch=2, clips_per_video=8, prop_frames=8, scale=0.5,
                sequences="blackswan,car-shadow,drift-straight", prop_dtypes="fp32,bf16"),
    "quick": dict(threads=1, batch=2, frames=2, crop=64, iters=1, warmup=1, e2e_iters=2, e2e_warmup=1, workers=1,
                  prefetch=2, clips_per_video=2, prop_frames=3, scale=0.25,
                  sequences="blackswan", prop_dtypes="fp32,bf16"),
}


# ------------------------------------------------------------------ helpers used inside the measuring process
def peak_rss_gib() -> float:
    "Peak resident set size of this process (Linux reports KiB)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def synchronize(device: torch.device) -> None:
    if device.type == "cuda": torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    "Start the CUDA peak at what is allocated now (model, optimiser state, batch); no-op on the CPU."
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    "Peak memory of the timed part: CUDA allocated (and reserved), or this process's peak RSS on the CPU."
    if device.type == "cuda":
        return dict(mem_gib=torch.cuda.max_memory_allocated(device) / GIB,
                    reserved_gib=torch.cuda.max_memory_reserved(device) / GIB, mem_kind="CUDA max allocated")
    return dict(mem_gib=peak_rss_gib(), mem_kind="peak RSS")


def set_threads(spec: dict) -> None:
    if spec.get("threads"): torch.set_num_threads(spec["threads"])


def numerics() -> dict:
    "TF32 settings in force (fp32 rows on CUDA)."
    return dict(matmul_precision=torch.get_float32_matmul_precision(), cudnn_tf32=bool(torch.backends.cudnn.allow_tf32))


def bench_train_config(spec: dict):
    "The paper-ytvos preset at the benchmark's sizes and speed options (None: the device's default)."
    cfg = load_config("paper-ytvos")
    lo = spec["crop"]
    return dataclasses.replace(
        cfg, device=spec["device"], seed=0, batch_size=spec["batch"], frames_per_clip=spec["frames"],
        crop=spec["crop"], short_side=(lo, lo * 5 // 4), workers=spec.get("workers", 0),
        prefetch_factor=spec.get("prefetch", 2), clips_per_video=spec.get("clips_per_video", 1),
        video_root=spec.get("video_root"), amp_bf16=spec.get("amp_bf16"), channels_last=spec.get("channels_last"),
        fused_optimizer=spec.get("fused_optimizer"), compile=spec.get("compile", False), progress=False,
        val_every_epochs=None, fast_decode=spec.get("fast_decode", False))


def bench_setup(spec: dict) -> tuple:
    "(training config, device) of a measurement, with its CPU thread count set."
    set_threads(spec)
    cfg = bench_train_config(spec)
    return cfg, training_device(cfg, DistInfo())


def training_parts(cfg, device) -> tuple:
    "Encoder, optimiser, scheduler and the module the losses call, as `train` builds them (one process)."
    speed = speed_options(cfg, device)
    encoder = initial_encoder(cfg)
    encoder = encoder.to(device, memory_format=torch.channels_last if speed["channels_last"] else torch.preserve_format)
    optimizer = build_optimizer(encoder, cfg, fused=speed["fused_optimizer"])
    scheduler = build_scheduler(optimizer, cfg)  # lr_decay_every unresolved (None): constant lr
    net = training_module(encoder, speed, cfg, DistInfo(), device)
    return speed, optimizer, scheduler, net


def fixed_batch(cfg, device) -> dict:
    "Random normalised main/aug clips [B,T,3,crop,crop] and a flipped zoom-in θ [B,2,3] (timing ignores the pixels)."
    gen = torch.Generator().manual_seed(0)
    shape = (cfg.batch_size, cfg.frames_per_clip, 3, cfg.crop, cfg.crop)
    theta = torch.tensor([[-ZOOM, 0.0, -SHIFT], [0.0, ZOOM, SHIFT]]).expand(cfg.batch_size, 2, 3).contiguous()
    return {"main": torch.randn(shape, generator=gen).to(device), "aug": torch.randn(shape, generator=gen).to(device),
            "theta": theta.to(device)}


def timed_steps(step, n: int, device) -> float:
    "Seconds for `n` calls of `step(i)`, synchronised."
    synchronize(device)
    t0 = time.perf_counter()
    for i in range(n): step(i)
    synchronize(device)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ the measurements (each runs in its own process)
def measure_train(spec: dict) -> dict:
    "it/s and peak memory of `train_step` on a fixed in-memory batch."
    cfg, device = bench_setup(spec)
    speed, optimizer, scheduler, net = training_parts(cfg, device)
    batch, hooks = fixed_batch(cfg, device), TrainHooks()
    run = lambda i: train_step(net, batch, i, cfg, optimizer, scheduler, device, None, hooks)
    warmup = max(spec["warmup"], COMPILE_WARMUP if cfg.compile else 0)
    timed_steps(run, warmup, device)
    reset_peak(device)
    seconds = timed_steps(lambda i: run(warmup + i), spec["iters"], device)
    loss = run(warmup + spec["iters"])["loss"].item()
    return dict(it_s=spec["iters"] / seconds, loss=loss, speed={k: bool(v) for k, v in speed.items()},
                **peak_memory(device), **numerics())


def real_loader(cfg, device):
    "The training data stream of `train`: clips of --video-root, epoch batches, worker DataLoader."
    speed = speed_options(cfg, device)
    clips = clip_dataset(cfg, training_videos(cfg, Path(tempfile.gettempdir())))  # video_root given: no folder used
    loader = make_loader(clips, cfg, EpochBatchSampler(len(clips), cfg.batch_size, cfg.seed), speed["pin_memory"])
    return iter(loader), len(clips), speed


def measure_e2e(spec: dict) -> dict:
    "it/s and peak memory of `train_step` fed by the real data pipeline."
    cfg, device = bench_setup(spec)
    speed, optimizer, scheduler, net = training_parts(cfg, device)
    batches, n_clips, _ = real_loader(cfg, device)
    hooks = TrainHooks()
    run = lambda i: train_step(net, next(batches), i, cfg, optimizer, scheduler, device, None, hooks)
    timed_steps(run, spec["warmup"], device)  # starts the workers, fills the prefetch queue
    reset_peak(device)
    seconds = timed_steps(lambda i: run(spec["warmup"] + i), spec["iters"], device)
    return dict(it_s=spec["iters"] / seconds, clips=n_clips, speed={k: bool(v) for k, v in speed.items()},
                **peak_memory(device))


def measure_loader(spec: dict) -> dict:
    "Batches per second of the data pipeline alone (each batch copied to the device)."
    cfg, device = bench_setup(spec)
    batches, n_clips, speed = real_loader(cfg, device)
    def run(i):
        batch = next(batches)
        for k in ("main", "aug", "theta"): batch[k].to(device, non_blocking=True)
    timed_steps(run, spec["warmup"], device)
    seconds = timed_steps(run, spec["iters"], device)
    return dict(it_s=spec["iters"] / seconds, clips=n_clips, pin_memory=bool(speed["pin_memory"]))


def propagation_model(spec: dict, device) -> nn.Module:
    "The encoder (--checkpoint, else the seeded random initialisation), in eval mode on `device`."
    ckpt = spec.get("checkpoint")
    return (load_encoder(ckpt) if ckpt else build_encoder(seed=0)).eval().to(device)


def first_frames(seq, n: int | None):
    "The sequence cut to its first `n` frames (all when None)."
    if n is None or n >= len(seq): return seq
    return dataclasses.replace(seq, frame_paths=seq.frame_paths[:n], mask_paths=seq.mask_paths[:n])


def propagate_to_array(model, seq, cfg, scale: float, device) -> np.ndarray:
    "uint8 [T,H,W] label maps of `propagate_sequence`."
    out = np.empty((len(seq), *seq.size), np.uint8)
    for t, labels in enumerate(propagate_sequence(model, seq, cfg, scale=scale, device=device)): out[t] = labels
    return out


def measure_prop(spec: dict) -> dict:
    "ms/frame and peak memory of `propagate_sequence` over the sequences; label maps saved for the comparison."
    set_threads(spec)
    device = torch.device(spec["device"])
    model = propagation_model(spec, device)
    cfg = PropagationConfig(**spec.get("prop_cfg", {}), precision=spec["dtype"])
    davis = DavisDataset(spec["davis_root"], split="val", sequences=spec["sequences"])
    seqs = [first_frames(s, spec.get("prop_frames")) for s in davis]
    propagate_to_array(model, first_frames(seqs[0], WARMUP_FRAMES), cfg, spec["scale"], device)  # warm-up
    synchronize(device); reset_peak(device)
    t0, frames = time.perf_counter(), 0
    for seq in seqs:
        labels = propagate_to_array(model, seq, cfg, spec["scale"], device)
        np.save(Path(spec["out_dir"]) / f"{spec['dtype']}_{seq.name}.npy", labels)
        frames += len(seq)
    synchronize(device)
    seconds = time.perf_counter() - t0
    h, w = seqs[0].size
    return dict(ms_frame=1000 * seconds / frames, frames=frames, frame_size=[h, w],
                encoder_size=[max(1, round(h * spec["scale"])), max(1, round(w * spec["scale"]))],
                prop_cfg=dataclasses.asdict(cfg), **peak_memory(device))


MEASURES = {"train": measure_train, "e2e": measure_e2e, "loader": measure_loader, "prop": measure_prop}


# ------------------------------------------------------------------ running a measurement in its own process
def _fork_entry(conn, kind: str, spec: dict) -> None:
    try: conn.send(("ok", MEASURES[kind](spec)))
    except BaseException: conn.send(("error", traceback.format_exc()))
    finally: conn.close()


def run_forked(kind: str, spec: dict, timeout: float | None = None) -> dict:
    """Measure in a fork of this process. Safe on the CPU only while this process has run no torch operation
    (a fork after OpenMP work can hang the child): the orchestration below never computes with torch."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_fork_entry, args=(child, kind, spec))
    proc.start(); child.close()
    try:
        if not parent.poll(timeout):
            proc.kill(); proc.join()
            raise RuntimeError(f"timed out after {timeout:g} s (--timeout)")
        status, value = parent.recv()
    except EOFError: status, value = "error", "the measuring process died without a result"
    proc.join()
    if status == "error" and proc.exitcode: value += f" (exit code {proc.exitcode})"
    if status != "ok": raise RuntimeError(value)
    return value


def run_subprocess(kind: str, spec: dict, timeout: float | None = None) -> dict:
    "Measure in a fresh interpreter (CUDA: a clean context and peak per measurement)."
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps({"kind": kind, "spec": spec})]
    try: done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired: raise RuntimeError(f"timed out after {timeout:g} s (--timeout)") from None
    lines = [l for l in done.stdout.splitlines() if l.startswith(RESULT_TAG)]
    if not lines: raise RuntimeError(f"the measuring process exited with {done.returncode} and no result")
    status, value = json.loads(lines[-1][len(RESULT_TAG):])
    if status != "ok": raise RuntimeError(value)
    return value


def child_main(payload: str) -> int:
    job = json.loads(payload)
    try: out = ["ok", MEASURES[job["kind"]](job["spec"])]
    except BaseException: out = ["error", traceback.format_exc()]
    print(RESULT_TAG + json.dumps(out), flush=True)
    return 0 if out[0] == "ok" else 1


# ------------------------------------------------------------------ the table
@dataclasses.dataclass
class Row:
    name: str  # stable row label (tests look for it)
    sizes: str  # what was measured, in words
    ref: str | None  # key of REFERENCE
    result: dict | None = None  # the measurement's dict
    status: str = "ok"  # "ok", "skipped: ...", "failed: ..."
    note: str = ""


def fmt_speed(r: Row) -> str:
    if r.result is None: return "–"
    return f"{r.result['ms_frame']:.1f} ms/frame" if "ms_frame" in r.result else f"{r.result['it_s']:.2f} it/s"


def fmt_mem(r: Row) -> str:
    if r.result is None or "mem_gib" not in r.result: return "–"
    return f"{r.result['mem_gib']:.2f} GiB"


def speed_ratio(r: Row) -> str:
    "× the reference's speed (>1: faster)."
    if r.result is None or r.ref is None: return "–"
    ref = REFERENCE[r.ref]
    if "ms_frame" in r.result: return f"{ref['ms'] / r.result['ms_frame']:.2f}×"
    return f"{r.result['it_s'] / ref['it_s']:.2f}×"


def mem_ratio(r: Row) -> str:
    "Our memory ÷ the reference's (a range when the reference gives one)."
    if r.result is None or r.ref is None or REFERENCE[r.ref]["mem_gib"] is None or "mem_gib" not in r.result: return "–"
    lo, hi = REFERENCE[r.ref]["mem_gib"]
    m = r.result["mem_gib"]
    return f"{m / lo:.2f}" if lo == hi else f"{m / hi:.2f}–{m / lo:.2f}"


def format_table(rows: list[Row]) -> str:
    "The markdown table of all rows."
    head = ["what", "sizes", "ours", "peak memory", "reference (H100)", "speed vs ref", "memory vs ref", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ref = REFERENCE[r.ref]["text"] if r.ref else "–"
        note = r.note if r.status == "ok" else r.status
        cells = [r.name, r.sizes, fmt_speed(r), fmt_mem(r), ref, speed_ratio(r), mem_ratio(r), note]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def mask_agreement(out_dir: Path, dtype: str, names: list[str]) -> dict:
    "Pixel agreement of the `dtype` label maps with the fp32 ones over frames 1… (frame 0 is the given mask)."
    same = total = frames_equal = frames = 0
    worst = 1.0
    for name in names:
        ours, ref = np.load(out_dir / f"{dtype}_{name}.npy"), np.load(out_dir / f"fp32_{name}.npy")
        eq = (ours[1:] == ref[1:]).reshape(len(ours) - 1, -1)
        same, total = same + int(eq.sum()), total + eq.size
        frames_equal, frames = frames_equal + int(eq.all(1).sum()), frames + len(eq)
        if len(eq): worst = min(worst, float(eq.mean(1).min()))
    return dict(agreement=same / max(total, 1), frames_equal=frames_equal, frames=frames, worst_frame=worst)


# ------------------------------------------------------------------ orchestration
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, every row")
    size = p.add_argument_group("training sizes (default: the paper's on CUDA, " + ", ".join(
        f"{k} {v}" for k, v in PROFILES["cpu"].items() if k in ("batch", "frames", "crop", "iters")) + " on the CPU)")
    size.add_argument("--batch", type=int, help="clips per step B")
    size.add_argument("--frames", type=int, help="frames per clip T")
    size.add_argument("--crop", type=int, help="crop side (short side resized to crop…1.25·crop before cropping)")
    size.add_argument("--iters", type=int, help="timed network steps per training row")
    size.add_argument("--warmup", type=int, help="untimed steps first (cuDNN autotuning, compile)")
    size.add_argument("--e2e-iters", type=int, help="timed steps of the end-to-end and loader rows")
    size.add_argument("--e2e-warmup", type=int, help="untimed end-to-end steps (worker start, prefetch)")
    size.add_argument("--workers", type=int, help="DataLoader worker processes")
    size.add_argument("--prefetch", type=int, help="batches each worker prepares ahead")
    size.add_argument("--clips-per-video", type=int, help="clips of each training video per epoch (reference run: 40)")
    size.add_argument("--fast-decode", action="store_true", help="JPEG draft decoding in the data pipeline")
    size.add_argument("--compile", action="store_true", help="add a row with torch.compile (slow start)")
    prop = p.add_argument_group("propagation")
    prop.add_argument("--sequences", help="comma-separated DAVIS sequences")
    prop.add_argument("--prop-frames", type=int, help="first N frames of each sequence (default on CUDA: all)")
    prop.add_argument("--scale", type=float, help="frame scale for the encoder (1: full 480p; masks always at 480p)")
    prop.add_argument("--prop-dtypes", help="comma-separated precisions among fp32,bf16,fp16 (fp32 is always run)")
    prop.add_argument("--prop-set", action="append", default=[], metavar="KEY=VALUE",
                      help="change a PropagationConfig field, e.g. --prop-set tile=16 (repeatable)")
    prop.add_argument("--checkpoint", type=Path, help="encoder weights for propagation (default: random init, seed 0)")
    add_data_flags(p, davis="for the propagation rows", video="for the data-pipeline rows")
    p.add_argument("--rows", default="train,e2e,loader,prop",
                   help="which groups of rows to measure: train, e2e, loader, prop (default: all; split long device runs)")
    p.add_argument("--no-real-data", action="store_true", help="skip the rows that need --video-root / --davis-root")
    p.add_argument("--threads", type=int, help="torch CPU threads (0: PyTorch's default; --quick: 1)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement before it is stopped (default: 900)")
    p.add_argument("--json", type=Path, help="also write every result here")
    p.add_argument("--isolation", choices=["auto", "fork", "subprocess"], default="auto",
                   help="how each measurement gets its own process (auto: subprocess on CUDA, fork on the CPU)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return args


def fill_defaults(args: argparse.Namespace, device: str) -> argparse.Namespace:
    "Sizes not given on the command line from the profile (quick, cuda or cpu)."
    profile = PROFILES["quick" if args.quick else ("cuda" if device.startswith("cuda") else "cpu")]
    for key, value in profile.items():
        if getattr(args, key, None) is None: setattr(args, key, value)
    return args


def data_root(args, kind: str) -> tuple[Path | None, str]:
    "(root, '') or (None, why it is skipped) for kind 'davis' or 'video', by the project's data rule; a bad explicit path is an error."
    if args.no_real_data: return None, "skipped: --no-real-data"
    try: root = getattr(find_data(args.davis_root, args.video_root), kind)
    except (FileNotFoundError, ValueError) as e: raise SystemExit(f"error: {e}")
    return (root, "") if root is not None else (None, f"skipped: no data (--{kind}-root)")


def speed_words(speed: dict, device: str) -> str:
    "The speed options in force, in words (PyTorch's default Adam is the foreach one on CUDA, a loop on the CPU)."
    on = [w for k, w in (("amp_bf16", "bf16 autocast"), ("channels_last", "channels-last")) if speed.get(k)]
    adam = "fused" if speed.get("fused_optimizer") else ("foreach" if device.startswith("cuda") else "for-loop")
    return ", ".join(on or ["fp32"]) + f", {adam} optimiser"


def prop_overrides(items: list[str]) -> dict:
    "['tile=16', 'radius=12.5'] -> {'tile': 16, 'radius': 12.5}, checked against PropagationConfig."
    known, out = {f.name for f in dataclasses.fields(PropagationConfig)} - {"precision"}, {}  # precision: --prop-dtypes
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in known: raise SystemExit(f"error: --prop-set {item!r}: use KEY=VALUE with KEY in {sorted(known)}")
        out[key.strip()] = json.loads(value) if value.strip() not in ("", "None", "none") else None
    return out


def build_rows(args, device: str) -> list[tuple[Row, str, dict]]:
    "(row, measurement kind, spec) for every row, in table order."
    base = dict(device=device, threads=args.threads, batch=args.batch, frames=args.frames, crop=args.crop,
                warmup=args.warmup, iters=args.iters)
    shape = f"{args.batch}×{args.frames}×{args.crop}²"
    off = dict(amp_bf16=False, channels_last=False, fused_optimizer=False)
    on = dict(amp_bf16=True, channels_last=True, fused_optimizer=True)
    rows = [(Row("train fp32", f"{shape}, {args.iters} timed steps", "train"), "train", {**base, **off}),
            (Row("train bf16+CL+fused", f"{shape}, {args.iters} timed steps", "train"), "train", {**base, **on})]
    if args.compile:
        rows.append((Row("train bf16+CL+fused+compile", f"{shape}, {args.iters} timed steps", "train"), "train",
                     {**base, **on, "compile": True}))
    video, why = data_root(args, "video")
    loader = dict(base, workers=args.workers, prefetch=args.prefetch, clips_per_video=args.clips_per_video,
                  video_root=str(video) if video else None, fast_decode=args.fast_decode,
                  warmup=args.e2e_warmup, iters=args.e2e_iters)
    pipe = f"{shape}, {args.e2e_iters} timed steps, {args.workers} workers, prefetch {args.prefetch}"
    rows.append((Row("end-to-end (real data)", pipe, "e2e", status=why or "ok"), "e2e", loader))
    rows.append((Row("loader only", pipe, None, status=why or "ok"), "loader", loader))
    davis, why = data_root(args, "davis")
    names = [s.strip() for s in args.sequences.split(",") if s.strip()]
    prop_cfg = prop_overrides(args.prop_set)
    frames = "all frames" if args.prop_frames is None else f"first {args.prop_frames} frames"
    dtypes = ["fp32"] + [d for d in (s.strip() for s in args.prop_dtypes.split(",")) if d and d != "fp32"]
    for d in dtypes:
        if d not in PRECISIONS: raise SystemExit(f"error: --prop-dtypes: unknown {d!r} (fp32, bf16, fp16)")
        spec = dict(device=device, threads=args.threads, dtype=d, davis_root=str(davis) if davis else None,
                    sequences=names, prop_frames=args.prop_frames, scale=args.scale, prop_cfg=prop_cfg,
                    checkpoint=str(args.checkpoint) if args.checkpoint else None)
        rows.append((Row(f"propagate {d}", f"{len(names)} seq, {frames}, scale {args.scale:g}", "prop",
                         status=why or "ok"), "prop", spec))
    return rows


def describe(row: Row, kind: str, spec: dict, out: dict, prop_names: list[str], work: Path) -> None:
    "Fill the row's sizes/notes from its result."
    if kind in ("train", "e2e"):
        row.note = speed_words(out["speed"], spec["device"]) + (" + torch.compile" if spec.get("compile") else "")
        if kind == "e2e": row.note += f", pin_memory {'on' if out['speed']['pin_memory'] else 'off'}, {out['clips']} clips/epoch"
        if "reserved_gib" in out: row.note += f"; reserved {out['reserved_gib']:.2f} GiB"
    elif kind == "loader":
        row.note = f"batches/s to the device, pin_memory {'on' if out['pin_memory'] else 'off'}"
    elif kind == "prop":
        h, w = out["encoder_size"]
        row.sizes += f" ({out['frames']} frames, encoder at {h}×{w}, masks at {out['frame_size'][0]}×{out['frame_size'][1]})"
        changed = {k: v for k, v in out["prop_cfg"].items() if k not in ("tile", "frame_batch")
                   and v != getattr(PropagationConfig(), k, v)}
        row.note = ", ".join(f"{k} {v}" for k, v in {"tile": out["prop_cfg"]["tile"],
                                                     "frame_batch": out["prop_cfg"]["frame_batch"], **changed}.items())
        if spec["dtype"] != "fp32":
            a = mask_agreement(work, spec["dtype"], prop_names)
            row.note += (f"; masks vs fp32: {100 * a['agreement']:.3f}% of pixels equal, {a['frames_equal']}/{a['frames']}"
                         f" frames identical, worst frame {100 * a['worst_frame']:.3f}% (soft masks fp32)")
            out["agreement"] = a


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    names = [l.split(":", 1)[1].strip() for l in info.read_text().splitlines() if l.startswith("model name")] \
        if info.exists() else []
    return names[0] if names else (platform.processor() or "unknown")


def header(device: str, args, first: dict | None) -> str:
    if device.startswith("cuda"): name = f"{torch.cuda.get_device_name(torch.device(device))} (CUDA {torch.version.cuda})"
    else: name = f"CPU {cpu_name()}, {os.cpu_count()} cores, {args.threads or torch.get_num_threads()} torch threads"
    tf32 = ""
    if first and device.startswith("cuda"):
        tf32 = f"; fp32 numerics: cuDNN TF32 {'on' if first['cudnn_tf32'] else 'off'}, matmul precision {first['matmul_precision']}"
    return (f"bench/gpu.py on {name}; torch {torch.__version__}{tf32}. Reference: the official code on one H100 "
            "(the project's reference run). Memory: " + ("CUDA max allocated over the timed part." if device.startswith("cuda")
                                          else "peak RSS of the measuring process (libraries included)."))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child: return child_main(args.child)
    device = str(resolve_device(None if args.device == "auto" else args.device))
    args = fill_defaults(args, device)
    fresh = args.isolation == "subprocess" or (args.isolation == "auto" and device.startswith("cuda"))
    run = run_subprocess if fresh else run_forked
    load0, t_start = os.getloadavg()[0], time.perf_counter()
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        plan = build_rows(args, device)
        groups = {g.strip() for g in args.rows.split(",") if g.strip()}
        if groups - set(MEASURES): raise SystemExit(f"error: --rows: unknown {sorted(groups - set(MEASURES))}")
        plan = [(row, kind, spec) for row, kind, spec in plan if kind in groups]
        names = next((s["sequences"] for _, k, s in plan if k == "prop"), [])
        first_train = None
        for row, kind, spec in plan:
            if row.status != "ok": continue
            if kind == "prop":
                spec["out_dir"] = tmp
                if spec["dtype"] != "fp32" and not any(r.name == "propagate fp32" and r.result for r, _, _ in plan):
                    row.status = "skipped: the fp32 propagation failed"; continue
            print(f"[bench/gpu] {row.name} ...", file=sys.stderr, flush=True)
            try:
                row.result = run(kind, spec, args.timeout)
                describe(row, kind, spec, row.result, names, work)
                if kind == "train" and first_train is None: first_train = row.result
            except Exception as e:
                failed = True
                last = [l for l in str(e).strip().splitlines() if l.strip()]
                row.status = f"failed: {last[-1] if last else type(e).__name__}"
                print(f"[bench/gpu] {row.name} failed:\n{e}", file=sys.stderr, flush=True)
    rows = [r for r, _, _ in plan]
    print(header(device, args, first_train))
    print()
    print(format_table(rows))
    print()
    print(f"speed vs ref: our it/s ÷ 12.1 (training), ÷ 3.7 (end to end), 80 ms ÷ our ms/frame (propagation); "
          f"memory vs ref: ours ÷ 9.5 GiB (training), ÷ 1.35–1.2 GiB (propagation). "
          f"1-min load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after; {time.perf_counter() - t_start:.0f} s in all.")
    if not device.startswith("cuda"):
        print("CPU run: the reference figures are from an H100; the ratios only show the size of the gap.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(device=device, torch=torch.__version__, rows=[dataclasses.asdict(r) for r in rows]),
                                        indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
