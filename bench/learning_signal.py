"""Learning signal: J&F of the trained model vs the same architecture at random initialisation, over seeds.

For each seed: train a preset (default `cpu-tiny`) for a fixed iteration budget (default: the demo's, which
follows the speed path) on the shared training
video, propagate the first-frame masks of a few shared DAVIS sequences with the final checkpoint AND with
the seeded random initialisation the training started from, and score both with our J&F (original
resolution). Prints per-seed numbers and mean ± std (sample std over seeds) of both and of the difference.
Targets: trained beats random by >= 8 J&F points on average over 3 seeds on the demo's sequences, and by
>= 5 on held-out sequences (`--held-out`, scored once with the final settings: never choose a setting from them).
Every timing is printed beside the load average before it (1 minute) and the CPU-seconds it used (this process
and its finished children), so a number from a busy machine can be told from an idle one.

The sequences scored here (default: blackswan, car-shadow, drift-straight, the training module's
validation sequences) play the role of the paper's 5 validation sequences: any setting chosen from these
numbers is chosen on them, and the CPU demo scores the same three by default (say so when quoting).
The held-out sequences (`--held-out`, default: the other 6 shared val sequences) are scored only when asked.

Training runs are cached: a seed whose run folder already holds `last.pt` of the same preset, iterations,
overrides and precision is not trained again (pass --retrain to force). `--eval-steps 50,100` also scores the periodic checkpoints
`step_<N>.pt` of the first seed's run (set `--set ckpt_every=50`) on the demo sequences: the learning curve.

    python bench/learning_signal.py --seeds 0 --iterations 500 --set ckpt_every=100 --eval-steps 100,200,300,400  # a curve
    python bench/learning_signal.py --seeds 0,1,2 --held-out   # the demo's budget on this CPU, 3 seeds, held-out once
"""
import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dense_ulearn.data import DavisDataset
from dense_ulearn.options import shared_paths
from dense_ulearn.demo import (DEMO_PRECISIONS, checkpoint_step, demo_precision, demo_train_config, evaluate_models,
                               jf_table, propagate_models, sequence_table)
from dense_ulearn.encoder import build_encoder, load_encoder
from dense_ulearn.config import parse_overrides
from dense_ulearn.train import train


HELD_OUT = "breakdance,car-roundabout,cows,dance-twirl,drift-chicane,parkour"  # the other shared val sequences


class Timer:
    "Wall seconds and CPU-seconds (this process and its finished children) of a block, and the load average before it."
    def __enter__(self):
        self.load = os.getloadavg()[0]
        self.t, self.cpu = time.perf_counter(), self._cpu()
        return self
    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.t, self._cpu() - self.cpu
    @staticmethod
    def _cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    def __str__(self): return f"{self.wall:.0f} s wall, {self.cpu:.0f} CPU-s, load {self.load:.2f} before"


def seconds_to_step(run_dir: Path, step: int) -> float:
    "Training wall seconds up to `step`, summed over the logged intervals of metrics.jsonl (nan when not logged)."
    done, total = 0, 0.0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if m["step"] > step: break
        total += (m["step"] - done) / m["speed/it_per_s"]
        done = m["step"]
    return total if done == step else float("nan")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: 0,1,2)")
    p.add_argument("--sequences", default="blackswan,car-shadow,drift-straight", help="shared DAVIS sequences scored")
    p.add_argument("--held-out", nargs="?", const=HELD_OUT, default=None, metavar="SEQS",
                   help=f"also score these sequences (default when given without a value: {HELD_OUT})")
    p.add_argument("--iterations", type=int, default=None, help="training iterations per seed (default: the demo's "
                   "budget on this CPU and precision: cpu-tiny 400 with native bf16, else 200)")
    p.add_argument("--preset", default="cpu-tiny")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training overrides, as `dense-ulearn train --set` (repeatable)")
    p.add_argument("--scale", type=float, default=0.5, help="propagation frame scale (default: 0.5)")
    p.add_argument("--eval-steps", default="", help="also score checkpoints/step_<N>.pt for these N (comma-separated) on "
                   "the demo sequences of the FIRST seed: the learning curve (one seed along the curve, all seeds at the end)")
    p.add_argument("--out", type=Path, default=Path("runs/learning-signal"), help="run folders and masks go here")
    p.add_argument("--retrain", action="store_true", help="train again even when a finished run is cached")
    p.add_argument("--precision", choices=DEMO_PRECISIONS, default="auto",
                   help="as the demo's --precision: auto (bf16 where the CPU runs it natively), fp32 (the exact path), bf16")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: PyTorch's)")
    return p.parse_args(argv)


def trained_run(video_root, run_dir: Path, args, seed: int) -> tuple[Path, Timer | None]:
    "The run folder of `seed`, trained now unless a finished one is cached; (run folder, its training timer or None)."
    last, stamp = run_dir / "checkpoints" / "last.pt", run_dir.parent / "bench-run.json"
    asked = {"preset": args.preset, "iterations": args.iterations, "overrides": args.overrides, "seed": seed,
             "precision": args.precision}
    if (not args.retrain and last.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == asked
            and checkpoint_step(last) == args.iterations):
        return run_dir, None
    cfg = demo_train_config(video_root, run_dir, args.iterations, minutes=0, seed=seed, preset=args.preset,
                            overrides=parse_overrides(args.overrides) | args.speed | {"progress": False})
    with Timer() as t: train(cfg, overwrite=True)
    stamp.write_text(json.dumps(asked) + "\n")
    return run_dir, t


def score(model, dataset, davis_root, folder: Path, scale: float, prop) -> tuple[float, dict]:
    "(J&F-Mean, {seq: J&F}) of `model` on `dataset` propagated with `prop`; masks written to `folder`."
    dirs = propagate_models({"m": model}, dataset, folder, scale, prop, overwrite=True, progress=False)
    results = evaluate_models(davis_root, dirs, dataset.names)
    return float(jf_table(results).loc["m", "J&F-Mean"]), sequence_table(results)["m"].to_dict()


def mean_std(values) -> str:
    v = 100 * np.asarray(values, dtype=float)
    return f"{v.mean():6.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:5.2f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    sp = shared_paths()
    if sp is None: sys.exit("shared DAVIS data not found (set DENSE_ULEARN_DATA)")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.speed, prop = demo_precision(args.precision, torch.device("cpu"))  # the demo's rule, training and propagation
    if args.iterations is None:  # the demo's default budget, which follows the speed path
        args.iterations = demo_train_config(sp.video, args.out / "budget", preset=args.preset,
                                            overrides=parse_overrides(args.overrides) | args.speed).iterations
    steps = [int(s) for s in args.eval_steps.split(",") if s.strip()] + [args.iterations]
    sets = {"demo": DavisDataset(sp.davis, sequences=args.sequences.split(","))}
    if args.held_out: sets["held-out"] = DavisDataset(sp.davis, sequences=args.held_out.split(","))
    print(f"preset {args.preset}, {args.iterations} iterations, overrides {args.overrides or 'none'}, scale {args.scale}, "
          + ", ".join(f"{k} sequences {d.names}" for k, d in sets.items())
          + f", torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, precision {args.precision} "
          f"(propagation {prop.precision}; training's choice is in each run's config.yaml)", flush=True)
    rows = []
    for seed in seeds:
        run_dir, t_train = trained_run(sp.video, args.out / f"seed{seed}" / "run", args, seed)
        print(f"seed {seed}: training " + (str(t_train) if t_train else "cached"), flush=True)
        for name, dataset in sets.items():
            folder = args.out / f"seed{seed}" / name
            scored = steps if (seed == seeds[0] and name == "demo") else steps[-1:]  # held-out: only the final model
            with Timer() as t_random:
                random_jf, random_seq = score(build_encoder(seed=seed).eval(), dataset, sp.davis, folder / "random", args.scale, prop)
            print(f"seed {seed} {name}: random {100 * random_jf:.2f} ({t_random})", flush=True)
            for step in scored:
                ckpt = run_dir / "checkpoints" / ("last.pt" if step == args.iterations else f"step_{step}.pt")
                with Timer() as t:
                    jf, per_seq = score(load_encoder(ckpt), dataset, sp.davis, folder / f"step{step}", args.scale, prop)
                row = dict(seed=seed, set=name, step=step, trained=jf, random=random_jf, diff=jf - random_jf,
                           train_minutes=seconds_to_step(run_dir, step) / 60,
                           per_sequence={"trained": per_seq, "random": random_seq},
                           propagate_evaluate=dict(wall_s=t.wall, cpu_s=t.cpu, load_before=t.load))
                rows.append(row)
                print(f"seed {seed} {name} step {step:4d} ({row['train_minutes']:.1f} min of training): trained "
                      f"{100 * jf:.2f}  random {100 * random_jf:.2f}  diff {100 * row['diff']:+.2f}  (scoring {t})  "
                      + "  ".join(f"{s} {100 * per_seq[s]:.1f}/{100 * random_seq[s]:.1f}" for s in dataset.names),
                      flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                      "rows": rows}, indent=1) + "\n")
    print(f"\nJ&F-Mean x100 over seeds {seeds} (mean ± sample std):")
    for name in sets:
        for step in steps:
            r = [row for row in rows if row["step"] == step and row["set"] == name]
            if not r: continue
            print(f"  {name:8s} step {step:4d} ({np.mean([x['train_minutes'] for x in r]):.1f} min): trained "
                  f"{mean_std([x['trained'] for x in r])}   random {mean_std([x['random'] for x in r])}"
                  f"   trained − random {mean_std([x['diff'] for x in r])}")
    for name, target in (("demo", 8), ("held-out", 5)):
        final = [row["diff"] for row in rows if row["step"] == args.iterations and row["set"] == name]
        if final: print(f"target on the {name} sequences (trained − random >= {target} J&F points on average over "
                        f"{len(final)} seed(s)): {'MET' if 100 * np.mean(final) >= target else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
