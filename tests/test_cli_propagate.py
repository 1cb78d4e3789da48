"""`dense-ulearn propagate` end to end on a 4-frame copy of a real DAVIS sequence (random-init encoder, 1/4 scale)."""
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
