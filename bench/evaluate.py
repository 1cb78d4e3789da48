"""Bench: the J&F of one results folder by our evaluator and by the reference implementations, side by side in one run.

    .venv/bin/python bench/evaluate.py [--davis-root R] [--results DIR] [--sequences a,b] [--workers 1,2]

References:
- the official `davis2017` package (davis2017-evaluation; not on PyPI, the `[official]` extra installs it from GitHub)
  when it is importable; otherwise its stored numbers (`results/official-osvos-per-{frame,object}.csv`) and its stored
  timing on this machine kind (about 17 s and 1.8 GB on one process for the 9 shared sequences, data README);
- `vos-benchmark` (PyPI, MIT), a re-implementation that says it reproduces the official numbers. For the bench only:
  `.venv/bin/pip install --no-deps vos-benchmark opencv-python-headless` (it declares opencv-python, needs only cv2).

Every implementation runs in its own subprocess (vos-benchmark and the official code call exit() on bad input), with
the same number of processes; we time the evaluation call (after imports), its CPU time including worker processes,
the whole subprocess, and the peak memory of the process tree (sampled). Machines here are shared: compare the ratios
measured side by side, not absolute times across runs.
"""
import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dense_ulearn.options import shared_paths  # noqa: E402

OFFICIAL_STORED = {"eval_s": 17.0, "peak_gb": 1.8, "workers": 1}  # ../shared/data/README.md, 9 sequences, one process
SAMPLE_S = 0.02  # memory sampling period

# Snippets run in a fresh interpreter: argv[1] is a JSON dict of arguments; they write a JSON report to args["out"].
COMMON = """
import json, resource, sys, time, multiprocessing as mp
import psutil
a = json.loads(sys.argv[1])
def finish(t_import, t_eval, cpu0, base_rss, extra):
    for p in mp.active_children(): p.join()   # reap pool workers so their CPU time is counted
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    rep = dict(import_s=t_import, eval_s=t_eval, cpu_s=time.process_time() - cpu0 + ch.ru_utime + ch.ru_stime,
               base_rss=base_rss, **extra)
    json.dump(rep, open(a["out"], "w"))
t0 = time.perf_counter()
"""

OURS = COMMON + """
from dense_ulearn.evaluate import evaluate_davis
t_import = time.perf_counter() - t0
base, cpu0, t1 = psutil.Process().memory_info().rss, time.process_time(), time.perf_counter()
r = evaluate_davis(a["davis"], a["results"], sequences=a["sequences"], workers=a["workers"], split=a["split"],
                   exclude_first_last=a["skip"], progress=False)
t_eval = time.perf_counter() - t1
finish(t_import, t_eval, cpu0, base, dict(per_frame=r.per_frame.to_dict("list"), per_object=r.per_object.to_dict("list"),
                                          global_=r.global_.iloc[0].to_dict()))
"""

VOS = COMMON + """
from vos_benchmark.benchmark import benchmark
t_import = time.perf_counter() - t0
base, cpu0, t1 = psutil.Process().memory_info().rss, time.process_time(), time.perf_counter()
jf, j, f, objects = benchmark([a["gt"]], [a["res"]], strict=True, num_processes=a["workers"], verbose=False,
                              skip_first_and_last=a["skip"])
t_eval = time.perf_counter() - t1
per_object = {f"{seq}_{k}": [iou[k] / 100, bf[k] / 100] for seq, (iou, bf) in objects[0].items() for k in sorted(iou)}
finish(t_import, t_eval, cpu0, base, dict(per_object=per_object, global_=[jf[0] / 100, j[0] / 100, f[0] / 100]))
"""

OFFICIAL = COMMON + """
from davis2017.evaluation import DAVISEvaluation
t_import = time.perf_counter() - t0
base, cpu0, t1 = psutil.Process().memory_info().rss, time.process_time(), time.perf_counter()
m = DAVISEvaluation(davis_root=a["davis"], task="semi-supervised", gt_set=a["split"], sequences=a["sequences"]).evaluate(a["results"])
t_eval = time.perf_counter() - t1
names = list(m["J"]["M_per_object"])
finish(t_import, t_eval, cpu0, base, dict(names=names, **{f"{x}-{s}": m[x][s] for x in "JF" for s in "MRD"}))
"""


def run_snippet(code: str, args: dict) -> dict:
    "Run a snippet in a subprocess; returns its report plus wall time, exit status and peak RSS of the process tree."
    with tempfile.TemporaryDirectory() as d:
        args = {**args, "out": str(Path(d) / "report.json")}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(args)], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        peak = {"tree": 0, "one": 0}  # sum over the process tree (counts pages shared after fork twice); largest process
        def sample():
            root = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    rss = [p.memory_info().rss for p in [root, *root.children(recursive=True)]]
                    peak["tree"], peak["one"] = max(peak["tree"], sum(rss)), max(peak["one"], max(rss))
                except psutil.Error: pass
                time.sleep(SAMPLE_S)
        sampler = threading.Thread(target=sample); sampler.start()
        output = proc.communicate()[0]; sampler.join()
        wall = time.perf_counter() - t0
        report = json.loads(Path(args["out"]).read_text()) if Path(args["out"]).exists() else {}
    return {**report, "process_s": wall, "returncode": proc.returncode, "peak_rss": peak["tree"], "peak_rss_one": peak["one"],
            "output": output}


def linked_folder(root: Path, sources: dict[str, Path]) -> Path:
    "A folder of symlinks name -> source (vos-benchmark needs ground truth and results folders with the same sequences)."
    root.mkdir(parents=True)
    for name, src in sources.items(): (root / name).symlink_to(src, target_is_directory=True)
    return root


def max_abs(a, b) -> float: return float(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float))))


def gb(n_bytes) -> str: return f"{n_bytes / 1e9:.2f} GB"


def compare_ours(rep: dict, official_frames: pd.DataFrame, official_objects: pd.DataFrame) -> dict:
    "Max |ours - official| per level (per frame J/F, per object 6 statistics, global 7 numbers)."
    per_frame = pd.DataFrame(rep["per_frame"]).merge(official_frames, on=["Sequence", "Object", "Frame"], suffixes=("", "_o"), validate="1:1")
    per_object = pd.DataFrame(rep["per_object"]).merge(official_objects, on=["Sequence", "Object"], suffixes=("", "_o"), validate="1:1")
    stats = ["J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    means = [official_objects[c].mean() for c in stats]
    official_global = [(means[0] + means[3]) / 2, *means]
    return {"rows (frames, objects)": (len(per_frame), len(per_object)),
            "per frame": max(max_abs(per_frame.J, per_frame.J_o), max_abs(per_frame.F, per_frame.F_o)),
            "per object": max(max_abs(per_object[c], per_object[c + "_o"]) for c in stats),
            "global": max_abs(list(rep["global_"].values()), official_global)}


def compare_object_means(per_object: dict, official_objects: pd.DataFrame) -> tuple[float, list[str]]:
    "Max |J-Mean, F-Mean| difference over the official objects, and the object names the official table lacks."
    official = {f"{s}_{o}": (j, f) for s, o, j, f in official_objects[["Sequence", "Object", "J-Mean", "F-Mean"]].itertuples(index=False)}
    missing = [k for k in official if k not in per_object]
    if missing: raise RuntimeError(f"objects missing from the result: {missing}")
    diff = max(max_abs(per_object[k], official[k]) for k in official)
    return diff, sorted(set(per_object) - set(official))


def jf_tables(rows: list, official_objects: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    "Global J&F / J / F and per-object J&F of each implementation (its first process count), beside the stored official ones."
    def summary(names, j, f):  # per-object J-Mean and F-Mean -> (global row, {object: J&F})
        j, f = np.asarray(j, float), np.asarray(f, float)
        return ((j.mean() + f.mean()) / 2, j.mean(), f.mean()), dict(zip(names, (j + f) / 2))
    o = official_objects
    results = {"official (stored CSV)": summary([f"{s}_{k}" for s, k in zip(o.Sequence, o.Object)], o["J-Mean"], o["F-Mean"])}
    for impl, _, r in rows:
        if impl in results: continue
        if impl == "ours":
            po = r["per_object"]
            results[impl] = summary([f"{s}_{k}" for s, k in zip(po["Sequence"], po["Object"])], po["J-Mean"], po["F-Mean"])
        elif impl == "vos-benchmark":
            results[impl] = summary(list(r["per_object"]), *zip(*r["per_object"].values()))
        else:  # the official package, live
            results[impl] = summary(r["names"], r["J-M"], r["F-M"])
    global_ = pd.DataFrame({k: g for k, (g, _) in results.items()}, index=["J&F-Mean", "J-Mean", "F-Mean"]).T
    return global_, pd.DataFrame({k: objects for k, (_, objects) in results.items()})


def main(argv=None):
    sp = shared_paths()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--davis-root", type=Path, default=sp.davis if sp else None)
    p.add_argument("--results", type=Path, default=sp.results / "osvos" if sp else None)
    p.add_argument("--official-dir", type=Path, default=sp.results if sp else None,
                   help="folder with official-osvos-per-{frame,object}.csv (the stored official numbers)")
    p.add_argument("--sequences", default=None, help="comma-separated (default: the split file)")
    p.add_argument("--workers", default="1,2", help="process counts to compare, e.g. 1,2")
    args = p.parse_args(argv)
    if args.davis_root is None or args.results is None: p.error("no shared data found: pass --davis-root and --results")
    names = args.sequences.split(",") if args.sequences else (args.davis_root / "ImageSets/2017/val.txt").read_text().split()
    workers = [int(w) for w in args.workers.split(",")]
    official_frames = pd.read_csv(args.official_dir / "official-osvos-per-frame.csv", dtype={"Frame": str})
    official_objects = pd.read_csv(args.official_dir / "official-osvos-per-object.csv")
    official_frames = official_frames[official_frames.Sequence.isin(names)]
    official_objects = official_objects[official_objects.Sequence.isin(names)]
    has_vos = importlib.util.find_spec("vos_benchmark") is not None and importlib.util.find_spec("cv2") is not None
    has_official = importlib.util.find_spec("davis2017") is not None
    print(f"{len(names)} sequences of {args.davis_root}, results {args.results}; CPU cores: {psutil.cpu_count()}, "
          f"load average now {psutil.getloadavg()[0]:.1f}")
    print("official davis2017 package:", "importable, run live" if has_official else
          "NOT importable here (not on PyPI; `pip install .[official]` with internet) -> stored numbers and timing")
    print("vos-benchmark:", "importable" if has_vos else "NOT importable (pip install --no-deps vos-benchmark opencv-python-headless)")

    rows, checks = [], {}
    with tempfile.TemporaryDirectory() as d:
        gt_links = linked_folder(Path(d) / "gt", {n: args.davis_root / "Annotations/480p" / n for n in names})
        res_links = linked_folder(Path(d) / "res", {n: args.results / n for n in names})
        common = dict(davis=str(args.davis_root), results=str(args.results), sequences=names, split="val", skip=True)
        for n in workers:
            ours = run_snippet(OURS, {**common, "workers": n})
            if ours["returncode"] != 0: raise SystemExit(f"our evaluator failed:\n{ours['output']}")
            checks[f"ours vs official CSV ({n} proc)"] = compare_ours(ours, official_frames, official_objects)
            rows.append(("ours", n, ours))
            if has_vos:
                vos = run_snippet(VOS, {"gt": str(gt_links), "res": str(res_links), "workers": n, "skip": True})
                if vos["returncode"] != 0: print(f"vos-benchmark failed (exit {vos['returncode']}):\n{vos['output'][-2000:]}")
                else:
                    diff, extra = compare_object_means(vos["per_object"], official_objects)
                    checks[f"vos-benchmark vs official CSV ({n} proc)"] = {"per object J/F-Mean": diff, "extra objects": extra}
                    rows.append(("vos-benchmark", n, vos))
        if has_official:
            off = run_snippet(OFFICIAL, {**common, "workers": 1})
            if off["returncode"] != 0: print(f"official package failed:\n{off['output'][-2000:]}")
            else:
                ours_objects = pd.DataFrame(rows[0][2]["per_object"])
                checks["ours vs official package (live)"] = {"per object M/R/D": max(
                    max_abs(ours_objects[f"{x}-{s}"], off[f"{x}-{k}"]) for x in "JF" for k, s in (("M", "Mean"), ("R", "Recall"), ("D", "Decay")))}
                rows.append(("official (live)", 1, off))
        if has_vos:  # vos-benchmark on ground truth with void (255) and several objects, every frame scored
            fx = shared_paths().fixtures if sp else None
            if fx is not None:
                fx_names = (fx / "ImageSets/2017/fixtures.txt").read_text().split()
                gt_fx = linked_folder(Path(d) / "gt_fx", {n: fx / "Annotations/480p" / n for n in fx_names})
                res_fx = linked_folder(Path(d) / "res_fx", {n: fx / "results-previous-frame" / n for n in fx_names})
                vos_fx = run_snippet(VOS, {"gt": str(gt_fx), "res": str(res_fx), "workers": 1, "skip": False})
                ours_fx = run_snippet(OURS, {"davis": str(fx), "results": str(fx / "results-previous-frame"), "sequences": None,
                                             "split": "fixtures", "skip": False, "workers": 1})
                official_fx = pd.read_csv(fx / "official-previous-frame-per-frame.csv").groupby(["Sequence", "Object"], as_index=False)[["J", "F"]].mean()
                official_fx = official_fx.rename(columns={"J": "J-Mean", "F": "F-Mean"})
                j, f = official_fx["J-Mean"].mean(), official_fx["F-Mean"].mean()
                if vos_fx["returncode"] == 0:
                    diff, extra = compare_object_means(vos_fx["per_object"], official_fx)
                    checks["vos-benchmark on fixtures (void, multi-object)"] = {
                        "per object J/F-Mean": diff, "extra objects": extra, "global J&F/J/F": max_abs(vos_fx["global_"], [(j + f) / 2, j, f])}
                diff, extra = compare_object_means({f"{s}_{o}": (j, f) for s, o, j, f in zip(*(ours_fx["per_object"][c] for c in ("Sequence", "Object", "J-Mean", "F-Mean")))}, official_fx)
                ours_global = [ours_fx["global_"][c] for c in ("J&F-Mean", "J-Mean", "F-Mean")]
                checks["ours on fixtures (void, multi-object)"] = {"per object J/F-Mean": diff, "extra objects": extra,
                                                                   "global J&F/J/F": max_abs(ours_global, [(j + f) / 2, j, f])}

    global_, per_object = jf_tables(rows, official_objects)
    print("\n== J&F, global (each implementation at its first process count) ==")
    print(global_.to_string(float_format=lambda x: f"{x:.6f}"))
    print("\n== J&F per object ==")
    print(per_object.to_string(float_format=lambda x: f"{x:.6f}", na_rep="-"))
    print("\n== Agreement (max absolute difference) ==")
    for name, c in checks.items(): print(f"{name:48s} {c}")
    print("\n== Speed and memory ==")
    table = pd.DataFrame([{"implementation": impl, "processes": n, "eval s": r["eval_s"], "eval CPU s": r["cpu_s"],
                           "import s": r["import_s"], "whole process s": r["process_s"],
                           "RSS after import": gb(r["base_rss"]), "peak RSS (one process)": gb(r["peak_rss_one"]),
                           "peak RSS (tree sum)": gb(r["peak_rss"])} for impl, n, r in rows])
    table.loc[len(table)] = {"implementation": "official (stored)", "processes": 1, "eval s": OFFICIAL_STORED["eval_s"],
                             "peak RSS (one process)": f"{OFFICIAL_STORED['peak_gb']:.2f} GB"}
    print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}", na_rep="-"))
    print("\n== Ratios (same number of processes) ==")
    for n in workers:
        ours = next(r for i, k, r in rows if i == "ours" and k == n)
        vos = next((r for i, k, r in rows if i == "vos-benchmark" and k == n), None)
        if vos is not None:
            print(f"{n} proc: vos-benchmark / ours = {vos['eval_s'] / ours['eval_s']:.1f}x (eval wall), "
                  f"{vos['cpu_s'] / ours['cpu_s']:.1f}x (eval CPU), {vos['process_s'] / ours['process_s']:.1f}x (whole process)")
        if n == OFFICIAL_STORED["workers"]:
            print(f"{n} proc: official stored {OFFICIAL_STORED['eval_s']:.0f} s / ours = {OFFICIAL_STORED['eval_s'] / ours['eval_s']:.1f}x "
                  f"(eval wall), {OFFICIAL_STORED['eval_s'] / ours['cpu_s']:.1f}x (eval CPU), "
                  f"{OFFICIAL_STORED['eval_s'] / ours['process_s']:.1f}x (our whole process, imports included)")
        off = next((r for i, k, r in rows if i == "official (live)" and k == n), None)
        if off is not None: print(f"{n} proc: official (live) / ours = {off['eval_s'] / ours['eval_s']:.1f}x (eval wall)")


if __name__ == "__main__":
    main()
