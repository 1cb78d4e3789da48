"""CPU time and peak memory of one training step (forward + backward of `compute_losses`).

Usage:  .venv/bin/python bench/step_time.py [--repeats 3] [--threads N] [--configs 16x5x128 2x5x256]

Each configuration runs in its own subprocess, so the peak resident set size (getrusage ru_maxrss) belongs to that
configuration alone. Inputs are random normalised clips with a fixed zoom-and-flip θ (timing does not depend on the
pixel values); the encoder is `build_encoder(seed=0)` in train mode, the losses use `LossConfig()` (N=8, M=4) at every
size. Reported per configuration: the median over `--repeats` timed steps (after one warm-up step) of
  - step:   pass A + pass B + both losses, forward and backward (no optimiser step);
  - losses: the two losses alone, forward and backward, on keys of the same shape;
and the peak RSS of the process, plus the RSS after building the model (before any step) for reference.
Machines are shared and noisy: compare the rows of one run, not numbers from different runs.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from dense_ulearn.encoder import build_encoder
from dense_ulearn.losses import LossConfig, compute_losses, losses_from_keys

KEY_DIM = 128  # channels of the encoder's key
STRIDE = 8  # output stride of the encoder
ZOOM, SHIFT = 0.75, 0.1  # the fixed aug-view affine: zoom s and centre shift (normalised units), flipped


def parse_config(text: str) -> tuple[int, int, int]:
    "'16x5x128' -> (B, T, crop)."
    b, t, s = (int(v) for v in text.lower().split("x"))
    return b, t, s


def fixed_theta(n: int) -> torch.Tensor:
    "[n,2,3] flipped zoom-in affine (aug -> main), the same for every clip."
    return torch.tensor([[-ZOOM, 0.0, -SHIFT], [0.0, ZOOM, SHIFT]]).expand(n, 2, 3).contiguous()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def time_step(model, main, aug, theta, cfg, seed: int) -> float:
    start = time.perf_counter()
    out = compute_losses(model, main, aug, theta, cfg, torch.Generator().manual_seed(seed))
    out["loss"].backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def time_losses(b: int, t: int, h: int, theta, cfg, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    k = F.normalize(torch.randn(b, t, KEY_DIM, h, h, generator=gen), dim=2).requires_grad_()
    k_aug = F.normalize(torch.randn(b, t, KEY_DIM, h, h, generator=gen), dim=2)
    start = time.perf_counter()
    losses_from_keys(k, k_aug, theta, cfg, gen)["loss"].backward()  # the grids, L_ST and L_CV of one step
    return time.perf_counter() - start


def run_one(config: str, repeats: int, threads: int) -> dict:
    "Measure one configuration in this process; returns a JSON-able dict."
    if threads: torch.set_num_threads(threads)
    b, t, size = parse_config(config)
    cfg = LossConfig()
    model = build_encoder(seed=0).train()
    gen = torch.Generator().manual_seed(0)
    main = torch.randn(b, t, 3, size, size, generator=gen)
    aug = torch.randn(b, t, 3, size, size, generator=gen)
    theta = fixed_theta(b)
    rss_model = peak_rss_mb()
    time_step(model, main, aug, theta, cfg, seed=0)  # warm-up
    steps = [time_step(model, main, aug, theta, cfg, seed=i + 1) for i in range(repeats)]
    losses = [time_losses(b, t, size // STRIDE, theta, cfg, seed=i) for i in range(repeats)]
    return dict(config=config, threads=torch.get_num_threads(), step_s=statistics.median(steps),
                step_all=steps, losses_s=statistics.median(losses), rss_model_mb=rss_model, peak_rss_mb=peak_rss_mb())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["16x5x128", "2x5x256"], help="BxTxCROP, e.g. 16x5x128")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per configuration (after one warm-up)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure this one configuration and print JSON
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(args.child, args.repeats, args.threads)))
        return 0
    rows = []
    load_before = os.getloadavg()[0]
    for config in args.configs:
        cmd = [sys.executable, __file__, "--child", config, "--repeats", str(args.repeats), "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'config (BxTxcrop)':>18} {'threads':>7} {'step fwd+bwd s':>15} {'losses only s':>14} "
          f"{'RSS model MB':>13} {'peak RSS MB':>12}   steps")
    for r in rows:
        print(f"{r['config']:>18} {r['threads']:>7} {r['step_s']:>15.2f} {r['losses_s']:>14.3f} "
              f"{r['rss_model_mb']:>13.0f} {r['peak_rss_mb']:>12.0f}   {', '.join(f'{s:.2f}' for s in r['step_all'])}")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; 1-min load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (a load above the thread count means the timings are inflated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
