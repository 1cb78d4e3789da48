"""Tests of dense_ulearn.synthetic: the plain set (deterministic, exact masks, motion, occlusion) and the richer set the pictures use."""
import numpy as np

from dense_ulearn.data import DavisDataset
from dense_ulearn.synthetic import make_synthetic_davis, synthetic_video
from dense_ulearn.viz import SYNTHETIC_PICTURES


def test_synthetic_is_deterministic(tmp_path):
    a = make_synthetic_davis(tmp_path / "a", n_videos=2, n_frames=3, size=(32, 48), seed=5)
    b = make_synthetic_davis(tmp_path / "b", n_videos=2, n_frames=3, size=(32, 48), seed=5)
    c = make_synthetic_davis(tmp_path / "c", n_videos=2, n_frames=3, size=(32, 48), seed=6)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 * 3 * 2 + 2
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files if f.suffix == ".jpg")


def centred_iou(a, b):
    "IoU of two boolean masks after moving each one's centroid to the middle of a canvas (shape change only)."
    def centred(m):
        canvas = np.zeros((2 * m.shape[0], 2 * m.shape[1]), bool)
        yx = np.argwhere(m)
        yx = yx - yx.mean(0).round().astype(int) + np.array(m.shape)
        canvas[yx[:, 0], yx[:, 1]] = True
        return canvas
    a, b = centred(a), centred(b)
    return (a & b).sum() / (a | b).sum()


def test_synthetic_masks_match_objects(tmp_path):
    n, size = 12, (64, 96)
    ds = DavisDataset(make_synthetic_davis(tmp_path / "s", n_videos=4, n_frames=n, size=size, seed=0))
    occluded = False
    for v, seq in enumerate(ds):
        truth = synthetic_video(0, v, n, size)
        labels = np.stack([seq.mask(t) for t in range(n)])
        frames = np.stack([seq.frame(t) for t in range(n)]).astype(float)
        assert np.array_equal(labels, truth.labels)
        assert seq.object_ids == list(range(1, truth.amodal.shape[1] + 1)) == sorted(set(np.unique(labels[0])) - {0})
        for oid in range(truth.amodal.shape[1] + 1):  # each region carries its own colour (background = 0)
            region = frames[labels == oid]
            assert np.linalg.norm(truth.colours - region.mean(0), axis=1).argmin() == oid, (seq.name, oid)
        for oid in seq.object_ids:
            assert (labels[:, None] == oid).any()
            centre = [np.argwhere(truth.amodal[t, oid - 1]).mean(0) for t in (0, n - 1)]
            assert np.linalg.norm(centre[1] - centre[0]) > 2                       # it moves
            assert centred_iou(truth.amodal[0, oid - 1], truth.amodal[n - 1, oid - 1]) < 0.97  # it deforms
        visible = (labels[:, None] == np.arange(1, truth.amodal.shape[1] + 1)[:, None, None]).sum((2, 3))
        occluded |= bool((visible < truth.amodal.sum((2, 3))).any())
        bg = (labels[0] == 0) & (labels[-1] == 0)
        assert np.abs(frames[0][bg] - frames[-1][bg]).mean() > 10  # the background moves too
    assert occluded


def test_options_at_their_defaults_give_the_plain_set(tmp_path):
    plain = make_synthetic_davis(tmp_path / "plain", n_videos=3, n_frames=4, size=(32, 48), seed=2)
    same = make_synthetic_davis(tmp_path / "same", n_videos=3, n_frames=4, size=(32, 48), seed=2,
                                min_objects=1, enter=False, spin=0.0, pan=1.5)
    files = sorted(p.relative_to(plain) for p in plain.rglob("*") if p.is_file())
    assert all((plain / f).read_bytes() == (same / f).read_bytes() for f in files)


def test_richer_set_several_objects_one_entering(tmp_path):
    n = 16
    options = {k: v for k, v in SYNTHETIC_PICTURES.items() if k not in ("n_videos", "n_frames", "size")}
    assert options["enter"] and options["min_objects"] >= 3 and options["spin"] > 0  # what the pictures fall back to
    ds = DavisDataset(make_synthetic_davis(tmp_path / "rich", n_videos=3, n_frames=n, size=(60, 80), **options))
    for seq in ds:
        ids = [set(np.unique(seq.mask(t)).tolist()) - {0} for t in range(n)]
        newcomer = max(ids[-1])
        assert len(seq.object_ids) >= 2 and newcomer not in seq.object_ids and newcomer == len(seq.object_ids) + 1
        first = min(t for t in range(n) if newcomer in ids[t])
        assert 2 <= first <= n // 2 and all(newcomer in i for i in ids[first:]), (seq.name, first)
