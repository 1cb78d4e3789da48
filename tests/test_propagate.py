"""Label propagation (kNN over the first and recent frames, as the official code propagates labels): the fast streaming `propagate` gives the masks of the literal `propagate_reference`."""
import json
import re
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dense_ulearn.data import DAVIS_PALETTE, VOID_ID, DavisDataset, VideoSequence, read_mask, write_mask
from dense_ulearn.encoder import build_encoder
from dense_ulearn.fixtures import block_labels, entering_object_video, random_feats
from dense_ulearn.propagate import (PRECISIONS, PropagationConfig, context_blocks, context_frames, FeatureRing, predict_reference,
                                    propagate, propagate_dataset, propagate_reference, propagate_sequence, query_neighbours,
                                    radius_mask, radius_offsets, reference_groups, sequence_features, sequence_objects,
                                    upsample_labels)


def both(feats, groups, cfg):
    return list(propagate_reference(feats, groups, cfg)), list(propagate(feats, groups, cfg))


def label_diff(ref, fast, size):
    "Number of label-map pixels (at `size`) where the two versions differ, over all frames."
    return sum(int((upsample_labels(a, size) != upsample_labels(b, size)).sum()) for a, b in zip(ref, fast))


CASES = {  # name: (config, T, C, h, w, objects, first-appearance frames of later groups)
    "defaults, window larger than the map": (PropagationConfig(), 24, 16, 9, 14, 2, ()),
    "small radius and context": (PropagationConfig(radius=3, topk=5, context=4, tile=3), 12, 8, 11, 12, 1, ()),
    "radius 1: fewer candidates than k": (PropagationConfig(radius=1, topk=10, context=2, tile=5), 6, 8, 3, 2, 5, ()),
    "many objects, two later groups": (PropagationConfig(radius=2.5, topk=30, context=7, tile=4), 12, 32, 12, 13, 12, (3, 5)),
    "background only": (PropagationConfig(radius=4, topk=3, context=3, tile=2), 9, 8, 7, 9, 0, ()),
    "one cell": (PropagationConfig(topk=4, context=3), 5, 8, 1, 1, 1, ()),
    "long video, ring wraps, late group": (PropagationConfig(radius=3, topk=7, context=5, tile=4), 14, 8, 8, 10, 2, (9,)),
}


@pytest.mark.parametrize("name", CASES)
def test_fast_equals_reference_float64(name):
    cfg, T, C, h, w, n_obj, later = CASES[name]
    feats = random_feats(T, C, h, w, seed=len(name))
    first = {0: block_labels(h, w, n_obj + 1, seed=1, cell=4)}
    for k, t0 in enumerate(later):  # each later group introduces one new object
        first[t0] = torch.where(block_labels(h, w, 2, seed=t0, cell=4) == 1, n_obj + 1 + k, 0)
    groups = reference_groups(first, n_obj + 1 + len(later), (h, w), torch.float64)
    ref, fast = both(feats, groups, cfg)
    assert len(ref) == len(fast) == T
    assert max((a - b).abs().max().item() for a, b in zip(ref, fast)) < 1e-12
    assert label_diff(ref, fast, (4 * h, 4 * w)) == 0


def test_fast_agrees_with_reference_float32():
    T, C, h, w = 12, 64, 16, 24
    feats = random_feats(T, C, h, w, seed=3, dtype=torch.float32)
    groups = reference_groups({0: block_labels(h, w, 4, seed=3, cell=4)}, 4, (h, w))
    ref, fast = both(feats, groups, PropagationConfig())
    n = T * 4 * h * 4 * w
    diff = label_diff(ref, fast, (4 * h, 4 * w))
    print(f"float32 random features: {n - diff} of {n} label pixels agree")
    assert diff <= 0.001 * n


def test_known_answers():
    "Identical frames keep the mask; features rolling one cell per frame move it one cell per frame."
    f0 = random_feats(1, 16, 6, 9)[0]
    groups = reference_groups({0: block_labels(6, 9, 3, cell=2)}, 3, (6, 9), torch.float64)
    for m in propagate(f0.expand(6, -1, -1, -1), groups): torch.testing.assert_close(m, groups[0].labels)
    rolled = torch.stack([f0.roll(t, dims=-1) for t in range(5)])
    for t, m in enumerate(propagate(rolled, groups, PropagationConfig(topk=1, radius=3, context=4))):
        torch.testing.assert_close(m, groups[0].labels.roll(t, dims=-1))


def test_query_neighbours_give_the_reference_prediction():
    "One query cell's neighbours and weights, summed over their labels, are the reference's prediction for that cell."
    cfg = PropagationConfig(radius=3, topk=6)
    S, C, h, w, L = 5, 16, 7, 9, 3
    feats = random_feats(S + 1, C, h, w, seed=5)
    labels = torch.softmax(random_feats(S, L, h, w, seed=6), dim=1).reshape(S, L, h * w)  # [S,L,hw] soft labels
    keys = feats[:S].reshape(S, C, h * w).permute(1, 0, 2)  # [C,S,hw]
    pred = predict_reference(feats[S].reshape(C, h * w), keys, labels, radius_mask(h, w, cfg.radius, torch.float64), cfg)
    for cell in (0, 31, h * w - 1):
        wts, entries, cells = query_neighbours(feats[S], feats[:S], cell, cfg)
        assert len(wts) == cfg.topk and abs(float(wts.sum()) - 1) < 1e-12
        torch.testing.assert_close((wts[:, None] * labels[entries, :, cells]).sum(0), pred[:, cell])


def test_context_blocks_match_context_frames():
    ring = FeatureRing(20, 1, 1, 1, 1, torch.float32, "cpu")
    for t0, t in [(0, 1), (0, 7), (0, 20), (0, 21), (0, 45), (5, 6), (5, 25), (5, 26), (5, 60)]:
        dup, rest = context_blocks(t0, t, ring)
        short = context_frames(t0, t, 20)[1:]
        assert (dup[1] if dup else 0) == short.count(t0)
        assert sorted(rest) == sorted(ring.slot(j) for j in short if j != t0)
    assert len(radius_offsets(12)) == 437


def test_streaming_keeps_no_past_features():
    "The input feature maps are released as soon as the next frame arrives: memory does not grow with the video."
    alive = []
    def stream(T=12, C=8, h=6, w=7):
        for t in range(T):
            f = random_feats(1, C, h, w, seed=t, dtype=torch.float32)[0]
            alive.append(weakref.ref(f))
            yield f
    groups = reference_groups({0: block_labels(6, 7, 2, cell=4)}, 2, (6, 7))
    for t, _ in enumerate(propagate(stream(), groups, PropagationConfig(context=4))):
        assert sum(r() is not None for r in alive) <= 2, f"frame {t}: old feature maps kept alive"


@pytest.fixture(scope="module")
def encoder():
    return build_encoder(0).eval()


def test_real_sequence_fast_equals_reference(davis_root, encoder):
    "blackswan, 5 frames at 1/4 size, random-init encoder: identical label maps in float64, ≥ 99.9 % in float32."
    seq = DavisDataset(davis_root, sequences=["blackswan"])[0]
    seq.frame_paths, seq.mask_paths = seq.frame_paths[:5], seq.mask_paths[:5]
    feats = torch.stack(list(sequence_features(encoder, seq, scale=0.25)))  # [5,512,15,27]
    ids, first = sequence_objects(seq)
    for dtype in (torch.float64, torch.float32):
        groups = reference_groups(first, len(ids) + 1, feats.shape[-2:], dtype)
        ref, fast = both(feats.to(dtype), groups, PropagationConfig())
        diff, n = label_diff(ref, fast, seq.size), 5 * seq.size[0] * seq.size[1]
        print(f"blackswan {dtype}: {n - diff} of {n} label pixels agree")
        assert diff == 0 if dtype == torch.float64 else diff <= 0.001 * n
    assert (upsample_labels(fast[4], seq.size).numpy() == 1).sum() > 0  # the swan is still there


def test_mid_video_object_is_kept(tmp_path, encoder):
    seq = entering_object_video(tmp_path)
    fast = list(propagate_sequence(encoder, seq))
    ref = list(propagate_sequence(encoder, seq, reference=True))
    assert [int((o == 2).any()) for o in fast] == [0, 0, 0, 1, 1, 1]
    assert all((o[32:56, 56:88] == 2).mean() > 0.6 for o in fast[3:])
    assert all((o[8:32, 8:32] == 1).mean() > 0.6 for o in fast)
    assert sum(int((a != b).sum()) for a, b in zip(fast, ref)) == 0


def test_void_is_background_and_never_predicted(tmp_path, encoder):
    seq = entering_object_video(tmp_path, t_new=99)
    seq.object_ids, seq.first_appearance = [1], {1: 0}
    m0 = read_mask(seq.mask_paths[0]); m0[40:60, 0:30] = VOID_ID; write_mask(seq.mask_paths[0], m0)
    out = list(propagate_sequence(encoder, seq))
    assert all(set(np.unique(o)) <= {0, 1} for o in out)
    assert (out[0][42:58, 2:28] == 0).all()  # void is background in the first-frame context
    ref = list(propagate_sequence(encoder, seq, reference=True))  # the literal version treats void the same way
    assert sum(int((a != b).sum()) for a, b in zip(out, ref)) == 0


def test_pngs_read_back_with_palette(tmp_path, encoder):
    seq = entering_object_video(tmp_path / "frames")
    expected = list(propagate_sequence(encoder, seq))
    out = propagate_dataset(encoder, [seq], tmp_path / "out", progress=False)
    for path, labels in zip(seq.frame_paths, expected):
        png = out / "entering" / f"{path.stem}.png"
        assert (read_mask(png) == labels).all()
        with Image.open(png) as im:
            assert im.mode == "P" and im.size == (96, 64)
            assert np.array(im.getpalette()[:30]).tolist() == DAVIS_PALETTE[:10].reshape(-1).tolist()
    with pytest.raises(FileExistsError, match="--overwrite"):
        propagate_dataset(encoder, [seq], tmp_path / "out", progress=False)
    propagate_dataset(encoder, [seq], tmp_path / "out", overwrite=True, progress=False)


def test_clear_errors(tmp_path, encoder):
    seq = entering_object_video(tmp_path / "a")
    with pytest.raises(ValueError, match="max_objects=1"): sequence_objects(seq, max_objects=1)
    assert sequence_objects(seq, max_objects=2)[0] == [1, 2]
    seq.mask_paths[3] = None
    with pytest.raises(FileNotFoundError, match="mask of frame 3"): sequence_objects(seq)
    small = write_mask(tmp_path / "small.png", np.zeros((8, 8), np.uint8))
    bad = VideoSequence("bad", seq.frame_paths, [small] + [None] * 5, [1], {1: 0}, (64, 96))
    with pytest.raises(ValueError, match="8x8 but the frames are 64x96"): sequence_objects(bad)
    with pytest.raises(FileNotFoundError, match="not in the dataset"):
        propagate_dataset(encoder, [seq], tmp_path / "out", sequences=["nope"], progress=False)


def test_unmarked_pngs_are_never_replaced(tmp_path, encoder):
    "PNGs in a folder the project did not write (another method's results): refused even with overwrite, untouched."
    seq = entering_object_video(tmp_path / "frames")
    theirs = tmp_path / "osvos"
    png = write_mask(theirs / "entering" / "00000.png", np.zeros((64, 96), np.uint8))
    before = png.read_bytes()
    with pytest.raises(FileExistsError, match=r"did not write.*choose another --out folder"):
        propagate_dataset(encoder, [seq], theirs, overwrite=True, progress=False)
    assert png.read_bytes() == before and sorted(p.name for p in theirs.rglob("*")) == ["00000.png", "entering"]


def test_overwrite_replaces_only_the_sequences_written_before(tmp_path, encoder, capsys):
    "In a marked folder --overwrite replaces an earlier run's sequence folder whole, says so, and leaves the rest."
    from dense_ulearn.options import marked_files, read_marker
    seq = entering_object_video(tmp_path / "frames")
    out = propagate_dataset(encoder, [seq], tmp_path / "out", progress=False)
    assert read_marker(out)["kind"] == "masks" and marked_files(out, "masks") == {"entering"}
    stale = write_mask(out / "entering" / "00099.png", np.zeros((64, 96), np.uint8))  # from an earlier, longer run
    copied = write_mask(out / "cows" / "00000.png", np.zeros((64, 96), np.uint8))     # put there by hand
    propagate_dataset(encoder, [seq], out, overwrite=True, progress=False)
    assert "replaced" in capsys.readouterr().err
    assert not stale.exists() and sorted(p.stem for p in (out / "entering").glob("*.png")) == [p.stem for p in seq.frame_paths]
    cows = VideoSequence("cows", seq.frame_paths, seq.mask_paths, [1, 2], {1: 0, 2: 3}, (64, 96))
    with pytest.raises(FileExistsError, match="cows already hold PNGs that dense-ulearn did not write"):
        propagate_dataset(encoder, [cows], out, overwrite=True, progress=False)
    assert copied.exists()


def test_new_sequences_join_an_existing_folder_ground_truth_refused(tmp_path, encoder):
    seq = entering_object_video(tmp_path / "frames")
    other = tmp_path / "results"; (other / "notes").mkdir(parents=True)
    propagate_dataset(encoder, [seq], other, progress=False)  # a folder holding other things: the new sequence joins it
    assert (other / "notes").is_dir() and len(list((other / "entering").glob("*.png"))) == len(seq)
    (tmp_path / "DAVIS" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(ValueError, match="ground truth"):
        propagate_dataset(encoder, [seq], tmp_path / "DAVIS" / "Annotations" / "480p", progress=False)
    assert not (tmp_path / "DAVIS" / "Annotations").exists()


def test_validation_writes_a_new_folder_each_time(tmp_path, encoder):
    "train's validate: propagate_dataset(..., overwrite=True) into <run>/val/step_N."
    seq = entering_object_video(tmp_path / "frames")
    for step in (10, 20):
        out = propagate_dataset(encoder, [seq], tmp_path / "run" / "val" / f"step_{step}", overwrite=True, progress=False)
        assert len(list((out / "entering").glob("*.png"))) == len(seq)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_stays_close_to_fp32(davis_root, encoder, precision):
    "bf16/fp16 features and affinities (fp32 soft masks): blackswan, 6 frames at 1/4 size, nearly the fp32 masks."
    seq = DavisDataset(davis_root, sequences=["blackswan"])[0]
    seq.frame_paths, seq.mask_paths = seq.frame_paths[:6], seq.mask_paths[:6]
    fp32 = list(propagate_sequence(encoder, seq, PropagationConfig(), scale=0.25))
    low = list(propagate_sequence(encoder, seq, PropagationConfig(precision=precision), scale=0.25))
    agree, n = sum(int((a == b).sum()) for a, b in zip(low, fp32)), sum(a.size for a in fp32)
    print(f"{precision}: {agree} of {n} label pixels as in fp32")
    assert (low[0] == fp32[0]).all() and agree >= 0.98 * n
    feats = sequence_features(encoder, seq, scale=0.25, dtype=PRECISIONS[precision])
    assert {f.dtype for f in feats} == {PRECISIONS[precision]}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_fp32_masks_equal_cpu_masks(davis_root, encoder):
    "fp32 on the GPU: the CPU's label maps (≥ 99.9 % of pixels, as fast vs reference in float32)."
    seq = DavisDataset(davis_root, sequences=["blackswan"])[0]
    seq.frame_paths, seq.mask_paths = seq.frame_paths[:25], seq.mask_paths[:25]
    cpu = list(propagate_sequence(encoder, seq, PropagationConfig(), scale=0.5, device="cpu"))
    gpu = list(propagate_sequence(encoder, seq, PropagationConfig(), scale=0.5, device="cuda"))
    encoder.cpu()
    agree, n = sum(int((a == b).sum()) for a, b in zip(gpu, cpu)), sum(a.size for a in cpu)
    print(f"GPU vs CPU fp32: {agree} of {n} label pixels agree")
    assert agree >= 0.999 * n


FIXTURES = ("random_feats", "block_labels", "entering_object_video", "tiny_davis")


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_has_one_home(name):
    "Notebooks and tests share one definition of each known-answer input: dense_ulearn/fixtures.py (nbs/05a_fixtures.ipynb)."
    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(rf"^def\s+_?{name}\b", re.M)
    found = [str(f.relative_to(root)) for d in ("dense_ulearn", "tests") for f in sorted((root / d).glob("*.py"))
             for _ in pattern.finditer(f.read_text())]
    assert found == ["dense_ulearn/fixtures.py"], f"{name} is defined in {found}: import it from dense_ulearn.fixtures"
    in_notebooks = [nb.name for nb in sorted((root / "nbs").glob("*.ipynb"))
                    for cell in json.loads(nb.read_text())["cells"] if cell["cell_type"] == "code"
                    for _ in pattern.finditer("".join(cell["source"]))]
    assert in_notebooks == ["05a_fixtures.ipynb"], f"{name} is defined in {in_notebooks}: import it from dense_ulearn.fixtures"


def test_default_protocol_gives_todays_masks(tmp_path, encoder):
    "The dul protocol through protocol_masks / propagate_dataset is the old path: the same label maps, bit for bit."
    from dense_ulearn.features import build_extractor
    from dense_ulearn.protocols import DUL, protocol_masks, read_propagation_record
    seq = entering_object_video(tmp_path / "frames")
    before = list(propagate_sequence(encoder, seq))
    for model in (encoder, build_extractor("dense-ulearn")):  # a DenseEncoder, or the same encoder by its name
        assert all((a == b).all() for a, b in zip(before, protocol_masks(model, seq, DUL)))
    out = propagate_dataset(encoder, [seq], tmp_path / "out", progress=False)
    assert all((read_mask(out / "entering" / f"{p.stem}.png") == a).all() for p, a in zip(seq.frame_paths, before))
    assert read_propagation_record(out)["settings"]["protocol"] == DUL.knobs()
