"""Encoder: stride-8 shapes on a real DAVIS frame, and checkpoint round trips through `load_encoder`."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dense_ulearn.data import normalize, read_frame
from dense_ulearn.encoder import (build_encoder, fake_official_snapshot, feature_size, load_encoder,
                                  read_key_table)

KEY_TABLE = Path(__file__).parent / "data" / "official_checkpoint_keys.tsv"


@pytest.fixture(scope="module")
def model():
    return build_encoder(seed=0).eval()


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_real_frame_gives_stride8_features(davis_root, model):
    frame = read_frame(davis_root / "JPEGImages/480p/blackswan/00000.jpg")  # [480,854,3] uint8
    assert frame.shape == (480, 854, 3)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()  # [1,3,480,854]
    x = F.interpolate(x, size=(120, 213), mode="bilinear", antialias=True).round().clamp(0, 255).byte()
    with torch.no_grad():
        out = model(normalize(x))
        res4 = model.res4_features(normalize(x))
    h, w = 15, 27  # ceil(120/8), ceil(213/8)
    assert (feature_size(120), feature_size(213)) == (h, w)
    assert out["key"].shape == (1, 128, h, w)
    assert out["res3"].shape == (1, 256, h, w)
    assert out["res4"].shape == (1, 512, h, w)
    for v in out.values():
        assert torch.isfinite(v).all()
        torch.testing.assert_close(v.norm(dim=1), torch.ones(1, h, w))
    torch.testing.assert_close(res4, out["res4"])


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_snapshot_round_trip(tmp_path, prefix):
    shapes = read_key_table(KEY_TABLE)
    assert len(shapes) == 129
    snap = fake_official_snapshot(shapes, seed=1, prefix=prefix)
    snap.update(score=np.float64(0.693), epoch=60)  # metadata as a NumPy scalar must not block weights_only loading
    path = tmp_path / "official_res4.pth"
    torch.save(snap, path)
    sd = load_encoder(path).state_dict()
    official = {k[len(prefix):]: v for k, v in snap["model"].items()}
    expected = {k.replace("fast_net.backbone.", "backbone.").replace("fast_net.emb_q.", "head."): v
                for k, v in official.items()}
    assert same_weights(sd, expected)


def test_our_checkpoint_round_trip(tmp_path, model):
    path = tmp_path / "last.pt"
    torch.save({"format": "dense-ulearn", "model": model.state_dict(), "step": 3, "config": {"seed": 0}}, path)
    loaded = load_encoder(path)
    assert not loaded.training
    assert same_weights(loaded.state_dict(), model.state_dict())
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["key"], model(x)["key"])


def test_mismatched_checkpoint_names_the_file(tmp_path, model):
    sd = model.state_dict()
    sd.pop("backbone.layer4.1.bn2.running_var")
    path = tmp_path / "broken.pt"
    torch.save({"format": "dense-ulearn", "model": sd}, path)
    with pytest.raises(ValueError, match=r"broken\.pt.*1 missing keys \[backbone\.layer4\.1\.bn2\.running_var\]"):
        load_encoder(path)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_encoder(tmp_path / "absent.pt")
