"""Tests of dense_ulearn.clips: clip shapes, determinism with any number of workers, the sampling rules, flips, real frames."""
import numpy as np
import pytest
import torch
from PIL import Image

from dense_ulearn.clips import ClipDataset, item_generator, resize_frames
from dense_ulearn.data import DavisDataset, VideoSequence, denormalize, normalize
from dense_ulearn.synthetic import make_synthetic_davis


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    return DavisDataset(make_synthetic_davis(tmp_path_factory.mktemp("clips"), n_videos=3, n_frames=12, size=(48, 80), seed=1))


def test_clip_shapes_and_determinism(synth_set):
    seen = []
    def aug_view(clip, g):
        seen.append((clip.dtype, tuple(clip.shape)))
        return clip.flip(-1), torch.eye(2, 3)
    ds = ClipDataset(synth_set, frames_per_clip=5, frame_gap=2, short_side=(32, 40), crop=32, clips_per_video=2,
                     seed=7, aug_view=aug_view)
    assert len(ds) == 6
    item = ds[4]
    assert item["main"].shape == item["aug"].shape == (5, 3, 32, 32) and item["main"].dtype == torch.float32
    assert item["theta"].shape == (2, 3) and item["video"] == 4 % 3 and seen[0] == (torch.uint8, (5, 3, 32, 32))
    assert torch.equal(item["aug"], item["main"].flip(-1))
    again = ClipDataset(synth_set, frames_per_clip=5, frame_gap=2, short_side=(32, 40), crop=32, clips_per_video=2,
                        seed=7, aug_view=aug_view)[4]
    assert all(torch.equal(item[k], again[k]) for k in ("main", "aug", "frames"))
    ds.set_epoch(3)
    epoch3 = [ds[i]["frames"] for i in range(len(ds))]
    ds.set_epoch(0)
    assert any(not torch.equal(a, ds[i]["frames"]) for i, a in enumerate(epoch3))
    with pytest.raises(IndexError): ds[6]


def test_clip_same_with_any_number_of_workers(synth_set):
    ds = ClipDataset(synth_set, short_side=(32, 40), crop=32, seed=3)
    ds.set_epoch(2)
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers)
        batches.append(torch.cat([b["main"] for b in loader]))
    assert torch.equal(*batches)


def test_clip_sampling_rules(synth_set):
    ytvos = ClipDataset(synth_set, frame_gap=2, short_side=32, crop=32, seed=0)
    for i in range(len(ytvos)):
        for epoch in range(10):
            ytvos.set_epoch(epoch)
            f = sorted(ytvos[i]["frames"].tolist())
            assert np.diff(f).tolist() == [2] * 4 and 0 <= f[0] and f[-1] < 12
    kin = ClipDataset(synth_set, frame_gap=10, short_side=32, crop=32, sampling="kinetics", crop_mode="center", seed=0)
    f = kin[0]["frames"].tolist()
    assert f == sorted(f) and np.diff(f).tolist() in ([2, 2, 2, 2], [2, 3, 2, 2], [2, 2, 3, 2])  # win 12: gap 2.4, int()


def test_clip_flip_is_shared_and_only_change(synth_set):
    kw = dict(short_side=(32, 48), crop=32, seed=11)
    flipped, plain = ClipDataset(synth_set, flip_p=1.0, **kw), ClipDataset(synth_set, flip_p=0.0, **kw)
    for i in range(len(plain)):
        assert torch.equal(flipped[i]["main"], plain[i]["main"].flip(-1))


def test_clip_pipeline_on_real_frames(davis_root):
    seq = DavisDataset(davis_root, sequences=["blackswan"])
    item = ClipDataset(seq, short_side=64, crop=64, sampling="kinetics", crop_mode="center", flip_p=0.0)[0]
    frames = seq[0].frames(item["frames"].tolist())                       # [T,480,854,3]
    small = np.stack([np.array(Image.fromarray(f).resize((113, 64), Image.Resampling.BILINEAR)) for f in frames])
    expected = torch.from_numpy(small[:, :, 24:88]).permute(0, 3, 1, 2)    # 854/480*64 = 113.8 -> 113; left round(24.5)=24
    assert np.array_equal(resize_frames(frames, 64), small)
    assert torch.allclose(item["main"], normalize(expected))
    fast = ClipDataset(seq, short_side=64, crop=64, sampling="kinetics", crop_mode="center", flip_p=0.0, fast_decode=True)[0]
    assert torch.equal(fast["frames"], item["frames"]) and fast["main"].shape == item["main"].shape
    assert (denormalize(fast["main"]) - denormalize(item["main"])).abs().mean() < 0.01  # JPEG downscaled decode: close


def test_clip_drops_and_rejects(synth_set, tmp_path):
    short = VideoSequence("short", synth_set[0].frame_paths[:4])
    with pytest.warns(UserWarning, match="short"):
        ds = ClipDataset([short, *synth_set], short_side=32, crop=32)
    assert ds.dropped == [("short", "4 frames < 5")] and len(ds) == 3 and {ds[i]["video"] for i in range(3)} == {1, 2, 3}
    with pytest.warns(UserWarning, match="smaller than the crop"), pytest.raises(ValueError, match="no usable videos"):
        ClipDataset(synth_set, short_side=64, crop=64)   # 48-pixel frames
    with pytest.raises(ValueError, match="smaller than the crop"): ClipDataset(synth_set, short_side=(24, 40), crop=32)
    with pytest.raises(ValueError, match="sampling"): ClipDataset(synth_set, short_side=32, crop=32, sampling="random")


def test_item_generator_streams_differ():
    seeds = {item_generator(s, e, i).initial_seed() for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 450
