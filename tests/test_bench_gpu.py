"""bench/gpu.py: the --quick run prints every row on the CPU; ratios, skipped rows and mask agreement are right.

The smoke run needs the shared data (fixtures `video_root`, `davis_root`); the other tests do not.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu.py"
TRAIN_ROWS = ["train fp32", "train bf16+CL+fused"]
DATA_ROWS = ["end-to-end (real data)", "loader only", "propagate fp32", "propagate bf16"]


@pytest.fixture(scope="module")
def bench():
    "bench/gpu.py imported as a module (it is a script, not part of the package)."
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def table_rows(stdout: str) -> dict[str, list[str]]:
    "Row name -> its cells, from the markdown table."
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| what"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


def number(cell: str) -> float:
    return float(cell.split()[0].rstrip("×"))


def test_quick_run_prints_every_row(video_root, davis_root):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--video-root", str(video_root),
                          "--davis-root", str(davis_root)], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = table_rows(res.stdout)
    assert set(TRAIN_ROWS + DATA_ROWS) <= set(rows), sorted(rows)
    for name in TRAIN_ROWS + DATA_ROWS:
        cells = rows[name]
        unit = "ms/frame" if name.startswith("propagate") else "it/s"
        assert cells[2].endswith(unit) and number(cells[2]) > 0, cells
        if name != "loader only": assert cells[3].endswith("GiB") and number(cells[3]) > 0, cells
    for name in TRAIN_ROWS: assert rows[name][1].startswith("2×2×64²"), rows[name]
    assert rows["train bf16+CL+fused"][-1].startswith("bf16 autocast, channels-last, fused optimiser"), rows
    assert rows["train fp32"][-1].startswith("fp32, for-loop optimiser"), rows
    agreement = rows["propagate bf16"][-1]
    assert "% of pixels equal" in agreement, agreement
    assert 50 < float(agreement.split("masks vs fp32: ")[1].split("%")[0]) <= 100
    assert "CPU" in res.stdout.splitlines()[0]


def test_rows_without_data_are_skipped(bench):
    args = bench.fill_defaults(bench.parse_args(["--quick", "--device", "cpu", "--no-real-data"]), "cpu")
    plan = bench.build_rows(args, "cpu")
    status = {row.name: row.status for row, _, _ in plan}
    assert all(status[n] == "ok" for n in TRAIN_ROWS)
    assert all(status[n] == "skipped: --no-real-data" for n in DATA_ROWS), status
    table = bench.format_table([row for row, _, _ in plan])
    assert table.count("skipped: --no-real-data") == len(DATA_ROWS)
    args = bench.fill_defaults(bench.parse_args(["--device", "cpu", "--compile", "--batch", "3"]), "cpu")
    rows = [row for row, _, _ in bench.build_rows(args, "cpu")]
    assert rows[2].name == "train bf16+CL+fused+compile" and rows[0].sizes.startswith("3×5×128²")


def test_ratios_against_the_reference(bench):
    train = bench.Row("train fp32", "", "train", result=dict(it_s=24.2, mem_gib=4.75))
    prop = bench.Row("propagate fp32", "", "prop", result=dict(ms_frame=20.0, mem_gib=0.54))
    loader = bench.Row("loader only", "", None, result=dict(it_s=50.0))
    assert (bench.speed_ratio(train), bench.mem_ratio(train)) == ("2.00×", "0.50")
    assert (bench.speed_ratio(prop), bench.mem_ratio(prop)) == ("4.00×", "0.40–0.45")  # 0.54 / 1.35, 0.54 / 1.2
    assert (bench.speed_ratio(loader), bench.mem_ratio(loader)) == ("–", "–")
    failed = bench.Row("propagate bf16", "", "prop", status="failed: boom")
    assert "| propagate bf16 |  | – | – |" in bench.format_table([failed]) and "failed: boom" in bench.format_table([failed])


def test_mask_agreement_counts_frames_after_the_first(bench, tmp_path):
    ref = np.zeros((3, 4, 5), np.uint8)
    low = ref.copy()
    low[0] = 1  # frame 0 (the given mask) is not compared
    low[2, 0, :2] = 1  # 2 of 20 pixels differ in frame 2
    np.save(tmp_path / "fp32_seq.npy", ref); np.save(tmp_path / "bf16_seq.npy", low)
    a = bench.mask_agreement(tmp_path, "bf16", ["seq"])
    assert a["agreement"] == pytest.approx(38 / 40) and (a["frames_equal"], a["frames"]) == (1, 2)
    assert a["worst_frame"] == pytest.approx(18 / 20)
