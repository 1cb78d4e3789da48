"""Bad input to the `dense-ulearn` command line: one contract for every mistake a user can make.

Every case runs `dense_ulearn.cli.main` in this process on tiny synthetic data and checks the contract:

* exit code 2 (argparse errors give 2 as well);
* no `Traceback` on stderr, and a short message (at most `MAX_LINES` lines besides argparse's usage) that names the
  offending flag or file and, where the case says so, the fix;
* nothing the project did not write is deleted or changed (every file and folder that existed before is still there);
* nothing is left behind that blocks the same command: run twice, it fails with the same error (not "already exists").

One parametrised test per input kind (flags, data roots, frames, masks, videos, checkpoints, configs, output folders);
a case is a command plus the flags under test, laid over the command's base arguments (`BASE`). Only the `--help` checks
start a subprocess: that `--help` imports no PyTorch shows only in a fresh process.
"""
import os
import re
import shutil
import subprocess
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dense_ulearn.cli import main as cli_main
from dense_ulearn.data import read_mask, write_mask
from dense_ulearn.synthetic import make_synthetic_davis
from dense_ulearn.options import DATA_ENV_VAR, OUTPUT_MARKER

MAX_LINES = 4  # lines of an error message, argparse's usage block aside
SEQ, SEQ2 = "synth-00", "synth-01"  # the two sequences of the workspace's DAVIS root
SIZE = (48, 64)  # (H, W) of its frames

# ---------------------------------------------------------------- base arguments of each command

SHRINK = ["--set", "batch_size=2", "--set", "crop=32", "--set", "short_side=[32,40]", "--set", "frames_per_clip=2",
          "--set", "clips_per_video=2", "--set", "workers=0", "--set", "val_every_epochs=null",
          "--set", "loss.anchor_grid=4", "--set", "loss.cv_grid=2", "--set", "cpu_threads=1", "--set", "progress=false"]
SYNTHETIC = ["--set", "synthetic_videos=2", "--set", "synthetic_frames=6", "--set", "synthetic_size=[40,48]"]

BASE = {  # what a case adds its flags to; {name} is a path of the workspace (`Workspace.paths`)
    "train": ["--synthetic", "--preset", "cpu-tiny", *SHRINK, *SYNTHETIC, "--iterations", "1", "--device", "cpu",
              "--no-progress", "--out", "{tmp}/run"],
    "propagate": ["--random-init", "--davis-root", "{davis}", "--device", "cpu", "--no-progress", "--out", "{tmp}/masks"],
    "evaluate": ["--davis-root", "{davis}", "--masks", "{results}", "--no-progress", "--out", "{tmp}/tables"],
    "demo": ["--davis-root", "{davis}", "--video-root", "{video}", "--preset", "cpu-tiny", *SHRINK, "--iterations", "1",
             "--scale", "0.5", "--no-explore", "--out", "{tmp}/report"],
    "info": [],
}
REPLACES = {"--checkpoint": {"--random-init"}, "--video-root": {"--synthetic"}, "--resume": {"--out", "--preset"}}


def flag_groups(tokens: list[str]) -> list[list[str]]:
    "[['--flag', value, ...], ...]: each flag with the values after it."
    groups = []
    for t in tokens:
        if t.startswith("--") or not groups: groups.append([t])
        else: groups[-1].append(t)
    return groups


def command_line(cmd: str, extra: list[str], drop=(), paths: dict | None = None) -> list[str]:
    "`cmd` with its base arguments, minus those the case's flags replace (and `drop`), then the case's flags."
    given = {t for t in extra if t.startswith("--")}
    gone = set(drop) | {f for g in given for f in REPLACES.get(g, ())} | (given - {"--set"})
    base = [t for g in flag_groups(BASE[cmd]) if g[0] not in gone for t in g]
    return [t.format(**(paths or {})) for t in [cmd, *base, *extra]]


# ---------------------------------------------------------------- running the command and checking the contract

@dataclass
class Run:
    argv: list[str]
    code: int
    out: str
    err: str

    def __str__(self):
        return f"dense-ulearn {' '.join(self.argv)}\n--> exit {self.code}\n--- stderr:\n{self.err[-3000:]}--- stdout:\n{self.out[-1500:]}"


def run_cli_here(capsys, argv: list[str]) -> Run:
    "`dense-ulearn ARGV` in this process: an exception that escapes `main` is what the console would show (exit 1)."
    capsys.readouterr()
    escaped = ""
    try: code = cli_main(argv)
    except SystemExit as e: code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception: code, escaped = 1, traceback.format_exc()
    cap = capsys.readouterr()
    return Run(argv, code, cap.out, cap.err + escaped)


def message_lines(err: str) -> list[str]:
    """The lines of stderr without argparse's usage block (`usage: ...` and its indented continuation); blank lines
    inside the message count, blank lines around it do not."""
    lines = err.strip("\n").splitlines()
    if lines and lines[0].startswith("usage:"):
        i = 1
        while i < len(lines) and lines[i].startswith(" "): i += 1
        lines = lines[i:]
    while lines and not lines[0].strip(): lines.pop(0)
    while lines and not lines[-1].strip(): lines.pop()
    return lines


def error_lines(err: str) -> list[str]:
    return [l for l in message_lines(err) if "error" in l.lower()]


def mentions(text: str, name) -> bool:
    "`name` is in `text`; a tuple `name`: any one of its strings is."
    return any(a in text for a in (name if isinstance(name, tuple) else (name,)))


def assert_user_error(run: Run, names=(), code: int = 2, one_line: bool = False) -> None:
    """The contract: exit `code`, no traceback, at most MAX_LINES lines, an error line, and every entry of `names` on
    stderr (a tuple entry: any one of its strings). `one_line`: a single error line carries all of them."""
    problems = []
    if run.code != code: problems.append(f"exit code {run.code}, expected {code}")
    if "Traceback" in run.err: problems.append("a Traceback on stderr")
    lines = message_lines(run.err)
    if len(lines) > MAX_LINES: problems.append(f"{len(lines)} lines on stderr, expected at most {MAX_LINES}")
    if not error_lines(run.err): problems.append("no error line on stderr")
    problems += [f"stderr does not name {n!r}" for n in names if not mentions(run.err, n)]
    if one_line and not any(all(mentions(l, n) for n in names) for l in error_lines(run.err)):
        problems.append(f"no single error line names {list(names)}")
    assert not problems, "; ".join(problems) + "\n" + str(run)


def snapshot(root: Path) -> dict[str, tuple]:
    "Every file and folder under `root`: relative path -> ('dir',) or ('file', size, mtime)."
    out = {}
    for p in root.rglob("*"):
        st = p.lstat()
        out[str(p.relative_to(root))] = ("dir",) if p.is_dir() and not p.is_symlink() else ("file", st.st_size, st.st_mtime_ns)
    return out


def assert_nothing_lost(before: dict, after: dict, run: Run) -> None:
    "Whatever existed before the command is still there, unchanged."
    gone = sorted(k for k in before if k not in after)
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    assert not gone and not changed, f"deleted: {gone[:10]}; changed: {changed[:10]}\n{run}"


# ---------------------------------------------------------------- the workspace: tiny data and things to damage

@dataclass
class Workspace:
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    paths: dict = field(default_factory=dict)
    trained: "TrainedRun | None" = None

    @property
    def davis(self) -> Path: return self.tmp / "davis"
    @property
    def results(self) -> Path: return self.tmp / "results"
    def frames(self, seq=SEQ) -> Path: return self.davis / "JPEGImages" / "480p" / seq
    def masks(self, seq=SEQ) -> Path: return self.davis / "Annotations" / "480p" / seq


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    "The workspace's data, written once per module and copied into each test's workspace."
    root = tmp_path_factory.mktemp("template")
    make_synthetic_davis(root / "davis", n_videos=2, n_frames=4, size=SIZE, seed=0)
    make_synthetic_davis(root / "video", n_videos=2, n_frames=6, size=(40, 48), seed=1)
    for s in (SEQ, SEQ2): shutil.copytree(root / "davis" / "Annotations" / "480p" / s, root / "results" / s)
    return root


@pytest.fixture
def ws(tmp_path, monkeypatch, template) -> Workspace:
    """A DAVIS root of two 4-frame synthetic sequences, its ground truth copied as result masks, a training-video root,
    and the usual wrong paths (a file, an empty folder, a folder that is no DAVIS root). The data rule finds nothing
    from the environment; the working directory is the workspace."""
    monkeypatch.chdir(tmp_path)
    for var in (DATA_ENV_VAR, "DENSE_ULEARN_DEBUG"): monkeypatch.delenv(var, raising=False)
    w = Workspace(tmp_path, monkeypatch)
    for name in ("davis", "video", "results"): shutil.copytree(template / name, tmp_path / name)
    (tmp_path / "afile.txt").write_text("not a folder\n")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "notdavis").mkdir(); (tmp_path / "notdavis" / "readme.txt").write_text("holiday photos\n")
    w.paths = {"tmp": str(tmp_path), "davis": str(w.davis), "results": str(w.results), "video": str(tmp_path / "video")}
    return w


@dataclass
class Case:
    extra: list[str]                      # the flags under test, laid over BASE[command]
    names: tuple = ()                     # what stderr must name (a tuple entry: any of its strings)
    setup: Callable | None = None         # damages the workspace first
    env: dict = field(default_factory=dict)
    drop: tuple = ()                      # base flags to leave out
    one_line: bool = False
    needs: str = ""                       # "no-cuda": only meaningful on a machine without CUDA


def cases(name: str, commands: str, extra, names=(), **kw) -> list:
    "One pytest param per command, id '<command>-<name>'."
    return [pytest.param(cmd, Case(list(extra), tuple(names), **kw), id=f"{cmd}-{name}") for cmd in commands.split()]


def check_bad_input(ws: Workspace, capsys, cmd: str, case: Case) -> Run:
    "Set up, run the command twice, check the contract both times; returns the first run."
    if case.needs == "no-cuda":
        import torch
        if torch.cuda.is_available(): pytest.skip("this case needs a machine without CUDA")
    if case.setup is not None: case.setup(ws)
    for k, v in case.env.items(): ws.monkeypatch.setenv(k, v.format(**ws.paths))
    argv = command_line(cmd, case.extra, case.drop, ws.paths)
    before = snapshot(ws.tmp)
    first = run_cli_here(capsys, argv)
    assert_user_error(first, case.names, one_line=case.one_line)
    assert_nothing_lost(before, snapshot(ws.tmp), first)
    again = run_cli_here(capsys, argv)  # nothing the first run left behind may change the answer
    assert (again.code, error_lines(again.err)) == (first.code, error_lines(first.err)), \
        f"the same command failed differently the second time:\nfirst:\n{first}\nagain:\n{again}"
    assert_nothing_lost(before, snapshot(ws.tmp), again)
    return first


# ---------------------------------------------------------------- flags

FLAG_CASES = [
    *cases("iterations=-3", "train demo", ["--iterations", "-3"], ["--iterations"]),
    *cases("iterations=0", "train demo", ["--iterations", "0"], ["--iterations"]),
    *cases("scale=0", "propagate demo", ["--scale", "0"], ["--scale"]),
    *cases("scale=-1", "propagate demo", ["--scale", "-1"], ["--scale"]),
    *cases("scale=nan", "propagate demo", ["--scale", "nan"], ["--scale"]),
    *cases("workers=-1", "train evaluate demo", ["--workers", "-1"], ["--workers"]),
    *cases("topk=0", "propagate", ["--topk", "0"], ["--topk"]),
    *cases("temperature=0", "propagate", ["--temperature", "0"], ["--temperature"]),
    *cases("seed=-1", "train propagate demo", ["--seed", "-1"], ["--seed"]),
    *cases("device=gpu0", "train propagate demo", ["--device", "gpu0"], ["--device"]),
    *cases("device=cuda-without-cuda", "train propagate demo", ["--device", "cuda"], ["--device"], needs="no-cuda"),
    *cases("precision=fp8", "train propagate", ["--precision", "fp8"], ["--precision"]),
    *cases("preset=nope", "train demo", ["--preset", "nope"], ["--preset"]),
    *cases("sequences=comma", "propagate evaluate demo", ["--sequences", ","], ["--sequences"]),
    *cases("sequences=nosuchseq", "propagate evaluate demo", ["--sequences", "nosuchseq"], ["nosuchseq"]),
    *cases("set-crop=-5", "train demo", ["--set", "crop=-5"], ["crop"]),
    *cases("set-nonsense=1", "train demo", ["--set", "nonsense=1"], ["nonsense"]),
    *cases("set-lr=abc", "train demo", ["--set", "lr=abc"], ["lr"]),
    *cases("video-root-not-offered", "propagate evaluate", ["--video-root", "{video}"], ["--video-root"]),
    *cases("checkpoint-and-random-init", "train propagate", ["--checkpoint", "{tmp}/nosuch.pt", "--random-init"],
           [("--checkpoint", "--random-init")]),
]


@pytest.mark.parametrize("cmd, case", FLAG_CASES)
def test_bad_flag(ws, capsys, cmd, case):
    check_bad_input(ws, capsys, cmd, case)


# ---------------------------------------------------------------- data roots and the data rule

ENV_DROP = {"train": ("--synthetic",), "propagate": ("--davis-root",), "evaluate": ("--davis-root",),
            "demo": ("--davis-root", "--video-root"), "info": ()}
ENV_GUARD = {"propagate": ["--sequences", SEQ], "evaluate": ["--sequences", SEQ], "demo": ["--sequences", SEQ]}
# (ENV_GUARD keeps a command that ignored the variable from working through all of the shared data)


def env_cases(name: str, commands: str, value: str, names) -> list:
    "The data rule's variable set to `value`, the command's own data flags left out."
    return [pytest.param(cmd, Case(ENV_GUARD.get(cmd, []), tuple(names), env={DATA_ENV_VAR: value}, drop=ENV_DROP[cmd]),
                         id=f"{cmd}-{name}") for cmd in commands.split()]


DATA_ROOT_CASES = [
    *cases("davis-root-missing", "train propagate evaluate demo info", ["--davis-root", "{tmp}/nosuchdir"], ["nosuchdir"]),
    *cases("davis-root-empty", "train propagate evaluate demo info", ["--davis-root", "{tmp}/emptydir"], ["emptydir"]),
    *cases("davis-root-is-a-file", "train propagate evaluate demo info", ["--davis-root", "{tmp}/afile.txt"], ["afile.txt"]),
    *cases("davis-root-not-davis", "propagate evaluate demo", ["--davis-root", "{tmp}/notdavis"], ["notdavis"]),
    *cases("video-root-missing", "train demo info", ["--video-root", "{tmp}/nosuchdir"], ["nosuchdir"]),
    *cases("video-root-empty", "train demo info", ["--video-root", "{tmp}/emptydir"], ["emptydir"]),
    *cases("video-root-is-a-text-file", "train demo info", ["--video-root", "{tmp}/afile.txt"], ["afile.txt"]),
    *env_cases("env-missing-folder", "train propagate evaluate demo info", "{tmp}/nosuchdir", [DATA_ENV_VAR]),
    *env_cases("env-not-a-davis-root", "train propagate evaluate demo info", "{tmp}/notdavis", [DATA_ENV_VAR]),
    *env_cases("env-none", "propagate evaluate", "none", ["--davis-root"]),  # says how to give data
]


@pytest.mark.parametrize("cmd, case", DATA_ROOT_CASES)
def test_bad_data_root(ws, capsys, cmd, case):
    check_bad_input(ws, capsys, cmd, case)


@pytest.mark.parametrize("cmd", ["info", "propagate", "evaluate"])
def test_data_env_var_naming_a_davis_root_is_used(ws, capsys, cmd):
    ws.monkeypatch.setenv(DATA_ENV_VAR, str(ws.davis))
    run = run_cli_here(capsys, command_line(cmd, ["--sequences", SEQ] if cmd != "info" else [], ("--davis-root",), ws.paths))
    assert run.code == 0, run
    if cmd == "info": assert str(ws.davis) in run.out, run
    if cmd == "propagate": assert (ws.tmp / "masks" / SEQ / "00000.png").is_file(), run
    if cmd == "evaluate": assert (ws.tmp / "tables" / "global_results-val.csv").is_file(), run


# ---------------------------------------------------------------- frames

def remove_frames(ws):
    for p in ws.frames().glob("*.jpg"): p.unlink()

def zero_byte_jpeg(ws): (ws.frames() / "00002.jpg").write_bytes(b"")
def random_bytes_jpeg(ws): (ws.frames() / "00002.jpg").write_bytes(np.random.default_rng(0).bytes(3000))

def truncated_jpeg(ws):
    p = ws.frames() / "00002.jpg"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

def odd_size_frame(ws): Image.new("RGB", (56, 40), (90, 120, 60)).save(ws.frames() / "00002.jpg", quality=90)


FRAME_READERS = "train propagate evaluate demo"  # train reads the DAVIS root as its --video-root
FRAME_VIDEO_ROOT = {"train": ["--video-root", "{davis}"]}


def frame_cases(name: str, setup, names) -> list:
    return [pytest.param(cmd, Case(FRAME_VIDEO_ROOT.get(cmd, []), tuple(names), setup=setup), id=f"{cmd}-{name}")
            for cmd in FRAME_READERS.split()]


FRAME_CASES = [
    *frame_cases("empty-frame-folder-with-masks", remove_frames, [SEQ]),
    *frame_cases("zero-byte-jpeg", zero_byte_jpeg, ["00002.jpg"]),
    *frame_cases("random-bytes-jpeg", random_bytes_jpeg, ["00002.jpg"]),
    *frame_cases("truncated-jpeg", truncated_jpeg, ["00002.jpg"]),
    *frame_cases("frames-of-two-sizes", odd_size_frame, ["00002.jpg"]),
]


@pytest.mark.parametrize("cmd, case", FRAME_CASES)
def test_bad_frames(ws, capsys, cmd, case):
    check_bad_input(ws, capsys, cmd, case)


# ---------------------------------------------------------------- masks

def antialiased_mask(size=SIZE) -> Image.Image:
    "A white ellipse drawn at 4x and downsampled with LANCZOS: a greyscale picture with soft edges, not a label map."
    h, w = size
    big = Image.new("L", (4 * w, 4 * h), 0)
    ImageDraw.Draw(big).ellipse([0.8 * w, 0.8 * h, 3.0 * w, 3.2 * h], fill=255)
    return big.resize((w, h), Image.Resampling.LANCZOS)


def gt_antialiased(frame: str):
    def setup(ws): antialiased_mask().save(ws.masks() / f"{frame}.png")
    return setup

def gt_many_ids(ws):
    labels = (np.arange(SIZE[1]) // 2 % 25 + 1).astype(np.uint8)[None].repeat(SIZE[0], 0)  # ids 1..25 in stripes
    write_mask(ws.masks() / "00000.png", labels)

def result_antialiased(ws): antialiased_mask().save(ws.results / SEQ / "00001.png")
def result_wrong_size(ws): write_mask(ws.results / SEQ / "00001.png", np.zeros((40, 56), np.uint8))

def result_extra_id(ws):
    labels = read_mask(ws.results / SEQ / "00001.png").copy()
    labels[:8, :8] = 9  # the sequence has at most 3 objects
    write_mask(ws.results / SEQ / "00001.png", labels)

def no_result_folder(ws): shutil.rmtree(ws.results / SEQ2)


CONVERSION = ("palette", "threshold")  # how to turn the picture into a label map

MASK_CASES = [
    *cases("first-mask-antialiased", "propagate evaluate demo", [], ["00000.png", CONVERSION], setup=gt_antialiased("00000")),
    *cases("gt-mask-antialiased", "evaluate", [], ["00001.png", CONVERSION], setup=gt_antialiased("00001")),
    *cases("first-mask-25-ids", "propagate evaluate demo", [], ["00000.png"], setup=gt_many_ids),
    *cases("result-antialiased", "evaluate", [], ["00001.png", CONVERSION], setup=result_antialiased),
    *cases("result-wrong-size", "evaluate", [], [SEQ, "00001"], setup=result_wrong_size),
    *cases("result-id-beyond-objects", "evaluate", [], [SEQ, "00001"], setup=result_extra_id),
    *cases("result-folder-missing", "evaluate", [], [SEQ2], setup=no_result_folder),
]


@pytest.mark.parametrize("cmd, case", MASK_CASES)
def test_bad_masks(ws, capsys, cmd, case):
    check_bad_input(ws, capsys, cmd, case)


def ids_1_and_3(ws):
    "Every mask of the first sequence (and its results) holds objects 1 and 3, no 2."
    labels = np.zeros(SIZE, np.uint8)
    labels[8:24, 8:28], labels[26:44, 36:60] = 1, 3
    for p in ws.masks().glob("*.png"):
        write_mask(p, labels); write_mask(ws.results / SEQ / p.name, labels)


@pytest.mark.parametrize("cmd", ["propagate", "evaluate"])
def test_first_mask_with_an_id_gap_warns(ws, capsys, cmd):
    "Ids {1, 3}: a warning naming the file and the missing id 2; evaluate scores ids 1..3 as the official code does."
    ids_1_and_3(ws)
    with warnings.catch_warnings():  # as a console shows them (pytest would collect them instead)
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, cat, file, line, f=None, l=None: \
            sys.stderr.write(warnings.formatwarning(msg, cat, file, line, l))
        run = run_cli_here(capsys, command_line(cmd, [], (), ws.paths))
    assert run.code == 0 and "Traceback" not in run.err, run
    mask = str(ws.masks() / "00000.png")
    warned = [l.replace(mask, "") for l in run.err.splitlines() if "00000.png" in l]
    assert any(re.search(r"\b2\b", l) for l in warned), f"no warning naming the file and the missing id 2\n{run}"
    assert all(l.startswith("warning: ") for l in warned), f"the warning is not one line 'warning: ...'\n{run}"
    assert not re.search(r"\.py:\d+:", run.err), f"the warning shows the code that raised it, not only its message\n{run}"
    if cmd == "evaluate":
        import pandas as pd
        per_object = pd.read_csv(ws.tmp / "tables" / "per-object_results-val.csv")
        assert sorted(per_object[per_object.Sequence.astype(str).str.startswith(SEQ)].Object) == [1, 2, 3], per_object


# ---------------------------------------------------------------- training videos

def broken_video(ws):
    (ws.tmp / "clips").mkdir()
    (ws.tmp / "clips" / "x.mp4").write_bytes(np.random.default_rng(1).bytes(5000))


def truncated_video(ws):
    "A real MPEG-4 file (header first) cut just after the header: it opens, and decoding its frames fails."
    import av
    (ws.tmp / "clips").mkdir()
    whole = ws.tmp / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 48, 40, "yuv420p"
        for i in range(12):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.full((40, 48, 3), 20 * i, np.uint8), format="rgb24")): c.mux(pkt)
        for pkt in s.encode(): c.mux(pkt)
    data = whole.read_bytes()
    (ws.tmp / "clips" / "cut.mp4").write_bytes(data[: data.index(b"mdat") + 40])
    whole.unlink()


VIDEO_CASES = [
    *cases("random-bytes-mp4", "train demo", ["--video-root", "{tmp}/clips"], ["x.mp4"], setup=broken_video, one_line=True),
    *cases("random-bytes-mp4-workers=1", "train demo", ["--video-root", "{tmp}/clips", "--workers", "1"], ["x.mp4"],
           setup=broken_video, one_line=True),
    *cases("truncated-mp4", "train", ["--video-root", "{tmp}/clips"], ["cut.mp4"], setup=truncated_video, one_line=True),
    *cases("truncated-mp4-workers=1", "train", ["--video-root", "{tmp}/clips", "--workers", "1"], ["cut.mp4"],
           setup=truncated_video, one_line=True),
]


@pytest.mark.parametrize("cmd, case", VIDEO_CASES)
def test_bad_training_video(ws, capsys, cmd, case):
    check_bad_input(ws, capsys, cmd, case)


# ---------------------------------------------------------------- checkpoints

@dataclass
class TrainedRun:
    run: Path        # a finished 2-step run: checkpoints/last.pt, step_1.pt, step_2.pt
    truncated: Path  # its last.pt cut to half


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> TrainedRun:
    root = tmp_path_factory.mktemp("trained")
    argv = command_line("train", ["--out", str(root / "run"), "--iterations", "2", "--set", "ckpt_every=1"])
    code = cli_main(argv)
    assert code == 0, f"the tiny training run failed: dense-ulearn {' '.join(argv)}"
    last = root / "run" / "checkpoints" / "last.pt"
    assert (root / "run" / "checkpoints" / "step_2.pt").is_file()
    truncated = root / "truncated.pt"
    with open(last, "rb") as f: truncated.write_bytes(f.read(last.stat().st_size // 2))
    return TrainedRun(root / "run", truncated)


def checkpoint_files(ws):
    (ws.tmp / "empty.pt").write_bytes(b"")
    (ws.tmp / "random.pt").write_bytes(np.random.default_rng(2).bytes(4096))


def run_with_truncated_last(ws):
    "A copy of the trained run whose checkpoints/last.pt is cut to half; step_1.pt and step_2.pt are intact."
    link_or_copy = lambda s, d: os.link(s, d) if s.endswith(".pt") else shutil.copy2(s, d)
    shutil.copytree(ws.trained.run, ws.tmp / "badrun", copy_function=link_or_copy)
    last = ws.tmp / "badrun" / "checkpoints" / "last.pt"
    last.unlink(); shutil.copyfile(ws.trained.truncated, last)


def not_a_run(ws):
    (ws.tmp / "notarun").mkdir()
    (ws.tmp / "notarun" / "notes.txt").write_text("my notes\n")


CHECKPOINT_CASES = [
    *cases("checkpoint-missing", "train propagate", ["--checkpoint", "{tmp}/nosuch.pt"], ["nosuch.pt"]),
    *cases("checkpoint-empty-file", "train propagate", ["--checkpoint", "{tmp}/empty.pt"], ["empty.pt"], setup=checkpoint_files),
    *cases("checkpoint-random-bytes", "train propagate", ["--checkpoint", "{tmp}/random.pt"], ["random.pt"], setup=checkpoint_files),
    *cases("checkpoint-truncated", "train propagate", ["--checkpoint", "{truncated}"], ["truncated.pt"]),
    *cases("resume-truncated-last-with-intact-step", "train", ["--resume", "{tmp}/badrun", "--iterations", "3"],
           ["step_2.pt", "last.pt"], setup=run_with_truncated_last),
    *cases("resume-not-a-run", "train", ["--resume", "{tmp}/notarun"], ["notarun"], setup=not_a_run),
    *cases("resume-empty-folder", "train", ["--resume", "{tmp}/emptydir"], ["emptydir"]),
    *cases("resume-missing-folder", "train", ["--resume", "{tmp}/nosuchrun"], ["nosuchrun"]),
]


@pytest.mark.parametrize("cmd, case", CHECKPOINT_CASES)
def test_bad_checkpoint(ws, capsys, trained, cmd, case):
    ws.trained, ws.paths["truncated"] = trained, str(trained.truncated)
    check_bad_input(ws, capsys, cmd, case)


# ---------------------------------------------------------------- configuration files

CONFIG_FILES = {"bad.yaml": "lr: [1, 2\n", "bad.toml": "lr = [1, 2\n", "list.yaml": "- lr\n- 0.1\n",
                "unknown.yaml": "learning_rate: 0.1\n", "settings.json": '{"lr": 0.1}\n'}


def config_files(ws):
    for name, text in CONFIG_FILES.items(): (ws.tmp / name).write_text(text)


def config_cases(name: str, file: str, names) -> list:
    return cases(name, "train", ["--config", f"{{tmp}}/{file}"], names, setup=config_files)


CONFIG_CASES = [
    *config_cases("malformed-yaml", "bad.yaml", ["bad.yaml"]),
    *config_cases("malformed-toml", "bad.toml", ["bad.toml"]),
    *config_cases("yaml-not-a-mapping", "list.yaml", ["list.yaml"]),
    *config_cases("unknown-key", "unknown.yaml", ["unknown.yaml", "learning_rate"]),
    *config_cases("missing-file", "nosuch.yaml", ["nosuch.yaml"]),
    *config_cases("wrong-suffix", "settings.json", ["settings.json"]),
]


@pytest.mark.parametrize("cmd, case", CONFIG_CASES)
def test_bad_config_file(ws, capsys, cmd, case):
    check_bad_input(ws, capsys, cmd, case)


# ---------------------------------------------------------------- output folders

USERS_FILES = {  # files named like each command's output, in a folder the user made (no marker)
    "train": ["checkpoints/", "notes.txt"],
    "propagate": [f"{SEQ}/00000.png", "notes.txt"],
    "evaluate": ["global_results-val.csv", "per-sequence_results-val.csv", "notes.txt"],
    "demo": ["report.md", "report.html", "summary.json", "run/", "notes.txt"],
}


def users_folder(cmd: str):
    def setup(ws):
        folder = ws.tmp / "x" / "mystuff"
        for name in USERS_FILES[cmd]:
            p = folder / name
            if name.endswith("/"): p.mkdir(parents=True)
            else: p.parent.mkdir(parents=True, exist_ok=True); p.write_text("the user's own file\n")
    return setup


OUTPUT_CASES = [
    *[pytest.param(cmd, Case(["--overwrite", "--out", "{tmp}/x/mystuff"], ("mystuff",), setup=users_folder(cmd)),
                   id=f"{cmd}-overwrite-users-folder") for cmd in USERS_FILES],
    *cases("out-inside-annotations", "train propagate evaluate", ["--out", "{davis}/Annotations/480p/mine"], ["Annotations"]),
    *cases("out-is-a-file", "train propagate evaluate demo", ["--out", "{tmp}/afile.txt"], ["afile.txt"]),
    *cases("failed-start-missing-video", "train", ["--video-root", "{tmp}/nosuchdir"], ["nosuchdir"]),
]


@pytest.mark.parametrize("cmd, case", OUTPUT_CASES)
def test_bad_output_folder(ws, capsys, cmd, case):
    check_bad_input(ws, capsys, cmd, case)


@pytest.mark.parametrize("cmd, out", [("train", "run"), ("propagate", "masks"), ("evaluate", "tables")])
def test_overwrite_replaces_only_marked_output(ws, capsys, cmd, out):
    "The command's own output carries the marker; again: refused without --overwrite, replaced with it (train says what went)."
    argv = command_line(cmd, [], (), ws.paths)
    first = run_cli_here(capsys, argv)
    assert first.code == 0, first
    assert (ws.tmp / out / OUTPUT_MARKER).is_file(), f"no {OUTPUT_MARKER} in {out}/\n{first}"
    assert_user_error(run_cli_here(capsys, argv), ["--overwrite"])
    replaced = run_cli_here(capsys, argv + ["--overwrite"])
    assert replaced.code == 0, replaced
    if cmd == "train": assert "deleted" in replaced.err, f"--overwrite does not say what it deleted\n{replaced}"


# ---------------------------------------------------------------- --debug and --help (real processes)

@pytest.mark.parametrize("how", ["--debug", "DENSE_ULEARN_DEBUG=1"])
def test_debug_shows_the_traceback(ws, capsys, how):
    "The same mistake: one line without --debug, the traceback with it (in this process: the exception escapes `main`)."
    argv = command_line("evaluate", ["--davis-root", "{tmp}/nosuchdir"], (), ws.paths)
    assert_user_error(run_cli_here(capsys, argv), ["nosuchdir"])
    if how == "--debug": argv = argv + ["--debug"]
    else: ws.monkeypatch.setenv("DENSE_ULEARN_DEBUG", "1")
    debug = run_cli_here(capsys, argv)
    assert debug.code != 0 and "Traceback" in debug.err and "nosuchdir" in debug.err, debug


@pytest.mark.parametrize("cmd", ["train", "propagate", "evaluate", "demo", "info"])
def test_help_imports_no_torch(cmd):
    code = ("import sys\nfrom dense_ulearn.cli import main\n"
            f"try: main([{cmd!r}, '--help'])\nexcept SystemExit: pass\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "no torch", done.stdout[-500:]
