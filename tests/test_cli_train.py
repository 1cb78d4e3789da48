"""`dense-ulearn train`: a tiny run and its resume in a subprocess; refusals and bad input through the same entry point
in-process (`dense_ulearn.cli.main`, what `python -m dense_ulearn.cli` calls), which is several times faster."""
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from dense_ulearn.cli import main as cli_main
from dense_ulearn.checkpoints import load_checkpoint

SHRINK = ["--preset", "cpu-tiny", "--set", "crop=32", "--set", "short_side=[32,40]",
          "--set", "synthetic_videos=3", "--set", "synthetic_frames=10", "--set", "synthetic_size=[40,56]",
          "--set", "clips_per_video=2", "--set", "batch_size=2", "--set", "workers=0", "--set", "progress=false",
          "--set", "loss.anchor_grid=4", "--set", "loss.cv_grid=2", "--set", "ckpt_every=1", "--set", "cpu_threads=1"]
TINY = [*SHRINK, "--synthetic"]  # cpu-tiny shrunk to 32 px crops of 3 synthetic videos, 2 clips per step


def run_in_process(capsys, *args) -> tuple[int, str, str]:
    "Exit code, stdout and stderr of `dense-ulearn ARGS...` run in this process."
    code = cli_main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_then_resume(run_cli, tmp_path):
    done = run_cli("train", *TINY, "--runs-dir", tmp_path, "--name", "cli", "--iterations", 2)
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "cli"
    assert f"run folder: {run_dir}" in done.stdout
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/step_1.pt", "checkpoints/step_2.pt"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").iterdir())
    config_text = (run_dir / "config.yaml").read_text()
    assert "-m dense_ulearn.cli train --preset cpu-tiny" in config_text  # the command, on one line however long
    assert len(yaml.safe_load(config_text)["run"]["history"]) == 1

    resumed = run_cli("train", "--resume", run_dir, "--iterations", 3)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 3
    restart = yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["history"][-1]
    assert f"-m dense_ulearn.cli train --resume {run_dir} --iterations 3" in restart["command"]
    assert restart["start_step"] == 2


def test_overwrite_is_explicit_and_keeps_the_initial_checkpoint(capsys, tmp_path):
    args = ["train", *TINY, "--runs-dir", tmp_path, "--name", "cli", "--iterations", 1]
    assert run_in_process(capsys, *args)[0] == 0
    run_dir = tmp_path / "cli"
    code, _, err = run_in_process(capsys, *args)
    assert code == 2 and "already exists" in err and "--overwrite" in err

    code, _, err = run_in_process(capsys, *args, "--overwrite", "--checkpoint", run_dir / "checkpoints" / "last.pt")
    assert code == 2 and "would delete" in err  # the weights it starts from are not deleted with the old run
    init = shutil.copy(run_dir / "checkpoints" / "last.pt", tmp_path / "init.pt")
    code, _, err = run_in_process(capsys, *args, "--overwrite", "--checkpoint", init, "--iterations", 2)
    assert code == 0, err
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["config"]["init_checkpoint"] == str(init)


@pytest.mark.parametrize("extra, message", [
    (["--set", "learning_rate=1"], "unknown config key 'learning_rate'"),
    (["--set", "lr=fast"], "lr: expected float"),
    (["--synthetic", "--video-root", "/tmp"], "not both"),
    (["--synthetic", "--checkpoint", "/no/such.pt"], "no such file"),
    (["--video-root", "/no/such/folder"], "not an existing folder"),
    (["--resume", "/no/such/run"], "--resume /no/such/run: no such file"),
])
def test_bad_input_is_an_error_message(capsys, tmp_path, extra, message):
    code, _, err = run_in_process(capsys, "train", *SHRINK, "--runs-dir", tmp_path, "--iterations", 1, *extra)
    assert code == 2 and message in err, err
    assert not (tmp_path / "cpu-tiny").exists()


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    "The documented multi-process launch: torchrun starts 2 gloo processes on the CPU."
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "dense_ulearn.cli", "train", *TINY, "--set", "batch_size=4", "--set", "device=cpu",
           "--runs-dir", str(tmp_path), "--name", "ddp", "--iterations", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert "world_size: 2" in (tmp_path / "ddp" / "config.yaml").read_text()
