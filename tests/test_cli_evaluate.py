"""`dense-ulearn evaluate`: the official tables on the shared OSVOS results, no silent overwrite, read-only results, clear errors."""
import shutil

import numpy as np
import pandas as pd
from PIL import Image

SEQUENCES = ["blackswan", "car-shadow"]


def _copy_results(results_root, dst, sequences=SEQUENCES):
    for s in sequences: shutil.copytree(results_root / "osvos" / s, dst / s)
    return dst


def test_evaluate_writes_official_tables_and_refuses_to_overwrite(run_cli, davis_root, results_root, tmp_path):
    out = tmp_path / "tables"
    args = ["evaluate", "--davis-root", davis_root, "--results", results_root / "osvos",
            "--sequences", ",".join(SEQUENCES), "--workers", "2", "--out", out]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "J&F-Mean" in r.stdout and "car-shadow" in r.stdout
    per_sequence = pd.read_csv(out / "per-sequence_results-val.csv")
    assert list(per_sequence.columns) == ["Sequence", "J-Mean", "F-Mean"]
    assert per_sequence.Sequence.tolist() == ["blackswan_1", "car-shadow_1"]
    official = pd.read_csv(results_root / "official-osvos-per-object.csv").set_index("Sequence").loc[SEQUENCES]
    np.testing.assert_allclose(per_sequence[["J-Mean", "F-Mean"]].to_numpy(), official[["J-Mean", "F-Mean"]].to_numpy(),
                               rtol=0, atol=1e-6)  # full precision in the file, not 3 decimals
    glob = pd.read_csv(out / "global_results-val.csv")
    assert list(glob.columns) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    assert (out / "per-object_results-val.csv").exists()

    before = (out / "global_results-val.csv").read_bytes()
    again = run_cli(*args)
    assert again.returncode == 2 and "error:" in again.stderr and "--overwrite" in again.stderr
    assert (out / "global_results-val.csv").read_bytes() == before
    assert run_cli(*args, "--overwrite").returncode == 0


def test_read_only_results_folder_needs_out(run_cli, davis_root, results_root, tmp_path):
    res = _copy_results(results_root, tmp_path / "res", ["car-shadow"])
    for d in (res, res / "car-shadow"): d.chmod(0o555)
    try:
        args = ["evaluate", "--davis-root", davis_root, "--results", res, "--sequences", "car-shadow", "--no-progress"]
        r = run_cli(*args)
        assert r.returncode == 2 and "read-only" in r.stderr and "--out" in r.stderr
        r = run_cli(*args, "--out", tmp_path / "out")
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in res.iterdir()) == ["car-shadow"]  # nothing written into the results folder
        assert (tmp_path / "out/global_results-val.csv").exists()
    finally:
        for d in (res, res / "car-shadow"): d.chmod(0o755)


def test_bad_result_file_named_by_sequence_and_frame(run_cli, davis_root, results_root, tmp_path):
    res = _copy_results(results_root, tmp_path / "res", ["car-shadow"])
    Image.open(res / "car-shadow/00007.png").convert("RGB").save(res / "car-shadow/00007.png")
    r = run_cli("evaluate", "--davis-root", davis_root, "--results", res, "--sequences", "car-shadow", "--out", tmp_path)
    assert r.returncode == 2 and "error: sequence 'car-shadow', frame 00007: result" in r.stderr and "'RGB' image" in r.stderr
    assert not (tmp_path / "global_results-val.csv").exists()


def test_evaluate_imports_only_what_it_needs():
    "The CLI loads the invoked command's module only: scoring masks needs neither torchvision nor matplotlib."
    import subprocess, sys
    code = ("import sys; from dense_ulearn.cli import main\n"
            "try: main(['evaluate', '--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torchvision', 'matplotlib', 'dense_ulearn.train', 'dense_ulearn.demo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
