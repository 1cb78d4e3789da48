"""`dense-ulearn propagate` end to end on a 4-frame copy of a real DAVIS sequence (random-init encoder, 1/4 scale)."""
import os

import numpy as np
import pytest
from PIL import Image

from dense_ulearn.data import read_mask

N_FRAMES = 4


@pytest.fixture
def mini_davis(davis_root, tmp_path):
    "A DAVIS root holding the first frames of blackswan (symlinks to the shared data)."
    root = tmp_path / "davis"
    for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        d = root / kind / "480p" / "blackswan"
        d.mkdir(parents=True)
        for i in range(N_FRAMES):
            (d / f"{i:05d}.{ext}").symlink_to(davis_root / kind / "480p" / "blackswan" / f"{i:05d}.{ext}")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("blackswan\n")
    return root


def test_cli_propagate_writes_palette_pngs(run_cli, mini_davis, tmp_path):
    out = tmp_path / "out"
    args = ["propagate", "--random-init", "--davis-root", mini_davis, "--sequences", "blackswan", "--out", out,
            "--scale", "0.25", "--device", "cpu"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    pngs = sorted((out / "blackswan").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(N_FRAMES)]
    for p in pngs:
        with Image.open(p) as im: assert im.mode == "P" and im.size == (854, 480)  # original size despite --scale
    gt, pred = read_mask(mini_davis / "Annotations/480p/blackswan/00000.png"), read_mask(pngs[0])
    assert set(np.unique(pred)) <= {0, 1} and (gt == pred).mean() > 0.95  # frame 0: the ground truth round trip
    assert (read_mask(pngs[-1]) == 1).sum() > 0

    again = run_cli(*args)
    assert again.returncode == 2 and "error:" in again.stderr and "--overwrite" in again.stderr


def test_cli_propagate_max_objects(run_cli, mini_davis, tmp_path):
    r = run_cli("propagate", "--random-init", "--davis-root", mini_davis, "--sequences", "blackswan",
                "--out", tmp_path / "o", "--scale", "0.25", "--max-objects", "0")
    assert r.returncode == 2 and "error:" in r.stderr and "--max-objects" in r.stderr and "Traceback" not in r.stderr


def test_cli_propagate_any_features_under_a_protocol_then_evaluate(run_cli, mini_davis, tmp_path):
    "Two commands: a user's function under the dino protocol, then J&F; the settings travel with the tables."
    import json
    (tmp_path / "user_feats.py").write_text(
        "import torch.nn.functional as F\n"
        "def pooled(frames):  # [N,3,H,W] -> [N,3,H/8,W/8]\n"
        "    return F.avg_pool2d(frames, 8)\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "masks"
    r = run_cli("propagate", "--features", "user_feats:pooled", "--protocol", "dino", "--resize", "short:120:floor16",
                "--davis-root", mini_davis, "--sequences", "blackswan", "--out", out, "--device", "cpu", "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "propagation.json").read_text())
    assert record["settings"]["features"]["name"] == "user_feats:pooled" and record["settings"]["features"]["stride"] == 8
    assert record["settings"]["protocol"]["name"] == "dino" and record["settings"]["protocol"]["topk"] == 5
    assert record["sequences"]["blackswan"] == {"frames": [480, 854], "input": [120, 208], "features": [15, 26], "n_frames": N_FRAMES}
    assert (read_mask(out / "blackswan" / "00000.png") == read_mask(mini_davis / "Annotations/480p/blackswan/00000.png")).all()
    tables = tmp_path / "tables"
    r = run_cli("evaluate", "--masks", out, "--davis-root", mini_davis, "--out", tables, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "Propagation settings (propagation.json):" in r.stdout and "user_feats:pooled" in r.stdout
    assert json.loads((tables / "propagation.json").read_text()) == record


def test_cli_propagate_bad_features_are_one_line(run_cli, mini_davis, tmp_path):
    (tmp_path / "flat_feats.py").write_text("def flat(frames):  # wrong: [N,C], not a map\n    return frames.mean((2, 3))\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    for argv, says in ((("--features", "torchvision:resnet18:layer9"), "has no layer 'layer9'"),
                       (("--features", "nowhere_module:f"), "cannot import nowhere_module"),
                       (("--features", "timm:vit_nope"), "timm"),
                       (("--features", "flat_feats:flat"), "must return a tensor [N,C,h,w]"),
                       (("--features", "torchvision:resnet18:layer2", "--weights", tmp_path / "none.pt"), "no such file"),
                       (("--features", "resnet18"), "unknown feature extractor"),
                       (("--protocol", "dino", "--resize", "wide"), "--resize")):
        r = run_cli("propagate", "--davis-root", mini_davis, "--out", tmp_path / "o", "--device", "cpu", *argv, env=env)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)
