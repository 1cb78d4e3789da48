"""`dense-ulearn demo` end to end: every report artefact, numbers equal to a separate `dense-ulearn evaluate`,
the data choice (real when found, synthetic default otherwise, explicit bad paths are errors)."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from dense_ulearn.cli import main as cli_main
from dense_ulearn.demo import DEFAULT_OUT, SyntheticSpec, prepare_report_dir, report_dir, select_demo_data

MODELS = ("trained", "random")


def _frame_stems(davis_root, seq):
    return sorted(p.stem for p in (Path(davis_root) / "JPEGImages" / "480p" / seq).glob("*.jpg"))


def _report_global(md_text: str, model: str) -> dict:
    "The global J&F row of `model` as printed in report.md (3 decimals)."
    header = next(l for l in md_text.splitlines() if l.startswith("| model |"))
    row = next(l for l in md_text.splitlines() if l.startswith(f"| {model} |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    vals = [c.strip() for c in row.strip("|").split("|")]
    return {c: float(v) for c, v in zip(cols[1:], vals[1:])}


def check_report(out: Path, davis_root, sequences, stdout: str):
    "Every artefact of a demo report folder is there and well formed."
    assert str(out.resolve() / "report.html") in stdout, "the demo must print where the report is"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 + len(sequences), "report.html must embed its figures"
    assert "<img" in page and 'src="figures/' not in page, "report.html must be self-contained"
    for seq in sequences:
        assert f"figures/masks_{seq}.png" in md and (out / "figures" / f"masks_{seq}.png").is_file()
        for model in MODELS:
            written = sorted(p.stem for p in (out / "masks" / model / seq).glob("*.png"))
            assert written == _frame_stems(davis_root, seq), f"masks/{model}/{seq} misses frames"
    for fig in ("jf_per_sequence.png", "training_loss.png"):
        assert (out / "figures" / fig).read_bytes()[:4] == b"\x89PNG"
    run = out / "run"
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "config.yaml").is_file()
    assert any((run / "tb").rglob("events.out.tfevents.*")), "the run's TensorBoard scalars are missing"
    return md


def test_demo_small_run_matches_a_separate_evaluate(run_cli, davis_root, tmp_path):
    """The issue's test: `dense-ulearn demo --iterations 5 --scale 0.25 --sequences blackswan,car-shadow`; its report's
    numbers equal a separate `dense-ulearn evaluate` of its masks."""
    seqs, iterations = ["blackswan", "car-shadow"], "5"
    out = tmp_path / "report"
    res = run_cli("demo", "--iterations", iterations, "--scale", "0.25", "--sequences", ",".join(seqs), "--out", out,
                  "--workers", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    md = check_report(out, davis_root, seqs, res.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert "shared data folder" in summary["facts"]["data"]
    assert f"{iterations} of {iterations} iterations" in summary["facts"]["training"]
    for model in MODELS:
        ev = tmp_path / f"eval-{model}"
        res_ev = run_cli("evaluate", "--davis-root", davis_root, "--results", out / "masks" / model,
                         "--sequences", ",".join(seqs), "--out", ev, "--no-progress")
        assert res_ev.returncode == 0, res_ev.stderr[-3000:]
        official = pd.read_csv(ev / "global_results-val.csv").iloc[0]
        printed = _report_global(md, model)
        for col, value in official.items():
            assert summary["global"][model][col] == pytest.approx(value, abs=1e-12), (model, col)
            assert printed[col] == pytest.approx(round(value, 3), abs=1e-9), (model, col)
        per_obj = pd.read_csv(ev / "per-object_results-val.csv")
        for seq in seqs:
            rows = per_obj[per_obj.Sequence == seq]
            expected = ((rows["J-Mean"] + rows["F-Mean"]) / 2).mean()
            assert summary["per_sequence"][model][seq] == pytest.approx(expected, abs=1e-12)
    assert list((out / "figures" / "explore").glob("*.png")), "the explorer's gallery is missing"


def test_demo_without_real_data_uses_the_synthetic_default_and_says_so(run_cli, tmp_path):
    empty = tmp_path / "no-data"; empty.mkdir()
    out = tmp_path / "report"
    res = run_cli("demo", "--iterations", "1", "--scale", "0.25", "--sequences", "synth-00", "--out", out,
                  "--set", "batch_size=2", "--no-explore", env={"DENSE_ULEARN_DATA": "none"})  # discovery off
    assert res.returncode == 0, res.stderr[-3000:]
    assert "SYNTHETIC" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert "SYNTHETIC" in summary["facts"]["data"] and "SYNTHETIC" in (out / "report.md").read_text()
    check_report(out, out / "data" / "synthetic-davis", ["synth-00"], res.stdout)


def test_selection_without_real_data_is_synthetic(tmp_path, monkeypatch):
    empty = tmp_path / "no-data"; empty.mkdir()
    monkeypatch.setenv("DENSE_ULEARN_DATA", "none")  # discovery off (an empty folder named by the variable is an error)
    small = SyntheticSpec(n_videos=2, n_frames=4, size=(48, 64))
    data = select_demo_data(synthetic_dir=tmp_path / "syn", val=small, train=small)
    assert (data.davis_source, data.video_source) == ("synthetic", "synthetic") and data.synthetic
    assert "SYNTHETIC" in data.describe()
    assert (data.davis_root / "Annotations" / "480p" / "synth-00").is_dir()


def _cli_error(capsys, *args) -> str:
    "Run `dense-ulearn ARGS` in this process (fast: torch is already imported); expect exit 2, return stderr."
    try: code = cli_main([str(a) for a in args])
    except SystemExit as e: code = e.code  # argparse's range checks: usage line, then "dense-ulearn demo: error: ..."
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") or "error: argument" in err, err
    return err


@pytest.mark.parametrize("flag", ["--davis-root", "--video-root"])
def test_explicit_empty_or_missing_path_is_a_clear_error(capsys, tmp_path, flag):
    empty = tmp_path / "empty"; empty.mkdir()
    out = tmp_path / "report"
    for path in (empty, tmp_path / "missing"):
        err = _cli_error(capsys, "demo", flag, path, "--out", out)
        assert flag in err and str(path) in err, err
    assert not out.exists(), "nothing may be written before the inputs are checked"


def test_bad_budget_scale_or_sequence_is_an_error_before_training(davis_root, capsys, tmp_path):
    for args in (["--iterations", "0"], ["--minutes", "-1"], ["--scale", "0"], ["--sequences", "no-such-seq"]):
        err = _cli_error(capsys, "demo", "--davis-root", davis_root, *args, "--out", tmp_path / "r")
        assert args[0 if args[0] != "--sequences" else 1] in err, err
        assert not (tmp_path / "r" / "run").exists()


def test_existing_report_is_never_overwritten_silently(tmp_path):
    out = tmp_path / DEFAULT_OUT; out.mkdir(); (out / "report.md").write_text("old")
    new = report_dir(out)
    assert new.parent == out and re.fullmatch(r"run-\d{8}-\d{6}(-\d+)?", new.name)
    assert report_dir(out, overwrite=True) == out


def test_overwrite_deletes_only_an_earlier_demo_report(tmp_path, capsys):
    from dense_ulearn.options import OUTPUT_MARKER
    report = prepare_report_dir(tmp_path / "report")
    (report / "report.md").write_text("earlier")
    assert prepare_report_dir(report_dir(report, overwrite=True), overwrite=True) == report
    assert not (report / "report.md").exists() and (report / OUTPUT_MARKER).is_file()
    assert "deleted" in capsys.readouterr().err
    old = tmp_path / "old"; old.mkdir(); (old / "report.md").write_text("from before markers")
    with pytest.raises(FileExistsError, match="delete that folder yourself"):
        prepare_report_dir(old, overwrite=True)
    mine = tmp_path / "mine"; mine.mkdir(); (mine / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="did not write"):
        prepare_report_dir(mine, overwrite=True)
    assert (old / "report.md").read_text() == "from before markers" and (mine / "thesis.tex").read_text() == "precious"


def test_overwrite_of_a_folder_the_demo_did_not_write_is_refused_before_training(capsys, davis_root, tmp_path):
    mine = tmp_path / "mine"; mine.mkdir(); (mine / "notes.txt").write_text("precious")
    err = _cli_error(capsys, "demo", "--davis-root", davis_root, "--out", mine, "--overwrite", "--iterations", "1")
    assert "--out" in err and "did not write" in err and "Traceback" not in err, err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_data_is_found_by_the_project_rule_and_named_without_a_path(tmp_path, monkeypatch):
    from dense_ulearn import options
    from dense_ulearn.demo import write_synthetic
    small = SyntheticSpec(n_videos=2, n_frames=4, size=(48, 64))
    repo = tmp_path / "repo"
    davis = write_synthetic(repo / "data" / "DAVIS", small)  # DAVIS unpacked where the README says
    (davis / "ImageSets" / "2017" / "train.txt").write_text("synth-00\n")
    monkeypatch.setattr(options, "repo_root", lambda: repo)
    monkeypatch.setenv("DENSE_ULEARN_DATA", "")
    data = select_demo_data(synthetic_dir=tmp_path / "syn")
    assert (data.davis_root, data.davis_source, data.video_source) == (davis, "data", "data")
    assert str(tmp_path) not in data.describe() and "data/DAVIS" in data.describe()
    monkeypatch.setenv("DENSE_ULEARN_DATA", str(davis))  # the variable naming a DAVIS root
    assert select_demo_data(synthetic_dir=tmp_path / "syn").davis_source == "env"
    monkeypatch.setenv("DENSE_ULEARN_DATA", str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match="DENSE_ULEARN_DATA"):
        select_demo_data(synthetic_dir=tmp_path / "syn")


def test_demo_device_is_the_project_rule():
    import dense_ulearn.demo as demo
    from dense_ulearn import options
    assert demo.resolve_device is options.resolve_device
    with pytest.raises(ValueError, match="--sequences .*all alone"):
        demo.check_demo_args(0.5, 1, ["all", "blackswan"])
