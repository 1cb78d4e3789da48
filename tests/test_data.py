"""Tests of dense_ulearn.data: real DAVIS data against its README, label maps, bad input, layouts (synthetic data: test_synthetic.py; training clips: test_clips.py)."""
import json
import re
import shutil
import warnings

import av
import numpy as np
import pytest
import torch
from PIL import Image

from dense_ulearn.clips import ClipDataset, worker_error_message
from dense_ulearn.data import (
    DAVIS_PALETTE, MAX_OBJECT_IDS, VOID_ID, DavisDataset, ObjectIdGapWarning, VideoFolder, YouTubeVOSDataset,
    detect_layout, first_frame_object_ids, open_videos, read_frame, read_mask, write_frame, write_mask,
)
from dense_ulearn.options import find_data, shared_paths
from dense_ulearn.synthetic import make_synthetic_davis


# ---------------------------------------------------------------- the shared data README, parsed (not hard-coded)

def readme_table(readme: str, section: str) -> dict[str, int]:
    "The `| sequence | frames |` table under `## <section>` of the data README."
    body = readme.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*([a-z0-9-]+)\s*\|\s*(\d+)\s*\|\s*$", body, flags=re.M)
    return {name: int(n) for name, n in rows}


@pytest.fixture(scope="module")
def readme(shared): return (shared.root / "README.md").read_text()


@pytest.fixture(scope="module")
def readme_size(readme):
    "(H, W) of every image, from 'All images are 854x480 RGB JPEG; masks 854x480'."
    (w, h), (mw, mh) = [tuple(map(int, m)) for m in re.findall(r"(\d+)x(\d+)", readme.split("All images are", 1)[1][:60])]
    assert (w, h) == (mw, mh)
    return h, w


@pytest.fixture(scope="module")
def fixtures_meta(fixtures_root): return {f["sequence"]: f for f in json.loads((fixtures_root / "fixtures.json").read_text())}


# ---------------------------------------------------------------- real data

def test_davis_mini_matches_readme(davis_root, readme, readme_size):
    table = readme_table(readme, "davis2017-mini")
    assert len(table) == 9 and sum(table.values()) == 645  # the README's own total
    ds = DavisDataset(davis_root, "val")
    assert detect_layout(davis_root) == "davis" and ds.labelled
    assert sorted(ds.names) == sorted(table)
    for seq in ds:
        assert len(seq) == table[seq.name], seq.name
        assert sum(p is not None for p in seq.mask_paths) == table[seq.name], seq.name  # every frame has a mask
        assert seq.size == readme_size  # every frame and mask was checked against this size at open
        assert seq.object_ids == [1] and seq.first_appearance == {1: 0}
    seq = ds["car-shadow"]
    assert seq.frame(len(seq) - 1).shape == (*readme_size, 3)
    assert seq.mask(len(seq) - 1).shape == readme_size


def test_davis_train_video_matches_readme(video_root, readme, readme_size):
    table = readme_table(readme, "davis2016-train-video")
    assert len(table) == 7 and sum(table.values()) == 551
    for split in ("train", None):  # the split file, and a folder scan
        ds = DavisDataset(video_root, split)
        assert not ds.labelled and sorted(ds.names) == sorted(table)
        assert {s.name: len(s) for s in ds} == table
        assert all(s.size == readme_size and s.mask_paths == [None] * len(s) and s.object_ids == [] for s in ds)
    vids = open_videos(video_root)
    assert vids.layout == "davis" and len(vids) == 7
    assert read_frame(vids["surf"].frame_paths[-1]).shape == (*readme_size, 3)


def test_fixtures_ids_and_void(fixtures_root, fixtures_meta):
    ds = DavisDataset(fixtures_root, split="fixtures")
    assert sorted(ds.names) == sorted(fixtures_meta)
    for seq in ds:
        meta = fixtures_meta[seq.name]
        assert [p.stem for p in seq.frame_paths] == meta["frames"]
        ids = set().union(*(np.unique(seq.mask(i)).tolist() for i in range(len(seq))))
        assert sorted(ids - {0, VOID_ID}) == meta["object_ids"], seq.name
        assert (VOID_ID in ids) == meta["has_void_255"], seq.name
    tennis = ds["tennis"].mask(0)
    assert tennis.dtype == np.uint8 and (tennis == VOID_ID).sum() > 0  # the ball stays void
    assert (tennis == VOID_ID).sum() == (np.array(Image.open(ds["tennis"].mask_paths[0])) == 255).sum()


def real_annotations(fixtures_root, davis_root):
    return sorted(fixtures_root.glob("Annotations/480p/*/*.png")) + [davis_root / "Annotations/480p/cows/00050.png"]


def test_palette_round_trip_is_identical(fixtures_root, davis_root, fixtures_meta, tmp_path):
    for src in real_annotations(fixtures_root, davis_root):
        orig = Image.open(src)
        palette = np.array(orig.getpalette(), np.uint8).reshape(-1, 3)
        standard = fixtures_meta.get(src.parent.name, {}).get("palette_is_standard_davis", True)
        out = write_mask(tmp_path / src.parent.name / src.name, read_mask(src), None if standard else palette)
        back = Image.open(out)
        assert back.mode == "P"
        assert np.array_equal(np.array(back), np.array(orig)), src  # pixels (ids, void 255 included)
        assert back.getpalette() == orig.getpalette(), src            # palette bytes
        if standard: assert np.array_equal(palette, DAVIS_PALETTE), src


def test_real_masks_in_other_modes(fixtures_root, tmp_path):
    src = fixtures_root / "Annotations/480p/tennis/00000.png"
    ids = read_mask(src)
    rgb = tmp_path / "rgb.png"; Image.fromarray(DAVIS_PALETTE[ids]).save(rgb)
    rgba = tmp_path / "rgba.png"; Image.fromarray(DAVIS_PALETTE[ids]).convert("RGBA").save(rgba)
    assert np.array_equal(read_mask(rgb), ids) and np.array_equal(read_mask(rgba), ids)
    binary = np.where(ids == 1, 255, 0).astype(np.uint8)   # DAVIS-2016 style: grey 0/255 is an object mask
    Image.fromarray(binary).save(tmp_path / "l.png"); Image.fromarray(binary).convert("LA").save(tmp_path / "la.png")
    for p in ("l.png", "la.png"): assert np.array_equal(read_mask(tmp_path / p), (ids == 1).astype(np.uint8))
    write_mask(tmp_path / "p.png", binary)                 # palette 0/255: background and void
    assert np.array_equal(read_mask(tmp_path / "p.png"), binary)
    bw = tmp_path / "bw.png"; Image.fromarray(np.repeat(binary[..., None], 3, 2)).save(bw)
    assert np.array_equal(read_mask(bw), (ids == 1).astype(np.uint8))


def test_shared_paths(shared, tmp_path, monkeypatch):
    assert shared_paths().davis.is_dir() and shared.fixtures.is_dir()
    monkeypatch.setenv("DENSE_ULEARN_DATA", str(shared.root))  # the variable may name the test-data folder itself
    assert shared_paths().root == shared.root and find_data().davis == shared.davis
    monkeypatch.setenv("DENSE_ULEARN_DATA", "none")  # discovery off: a machine without data
    assert shared_paths() is None and find_data().davis is None and find_data().video is None


def test_data_roots(shared, tmp_path, monkeypatch):
    monkeypatch.delenv("DENSE_ULEARN_DATA", raising=False)
    found = find_data()
    if found.davis_rule == "shared test data":  # a developer with DAVIS in data/DAVIS finds that first
        assert (found.davis, found.video) == (shared.davis, shared.video)
    assert find_data(davis_root=shared.fixtures).davis == shared.fixtures  # a flag wins
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"): find_data(davis_root=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing-dir"): find_data(video_root=tmp_path / "missing-dir")
    monkeypatch.setenv("DENSE_ULEARN_DATA", str(tmp_path / "typo"))  # a wrong explicit path is an error, not a fallback
    with pytest.raises(FileNotFoundError, match="DENSE_ULEARN_DATA"): find_data()
    monkeypatch.setenv("DENSE_ULEARN_DATA", str(shared.davis))  # a DAVIS root: the natural reading of the variable
    assert (find_data().davis, find_data().davis_rule) == (shared.davis, "$DENSE_ULEARN_DATA")


# ---------------------------------------------------------------- bad input: one clear error naming the file, at open

@pytest.fixture
def tiny(tmp_path):
    "A tiny synthetic DAVIS root: 2 videos x 4 frames of 24x32."
    return make_synthetic_davis(tmp_path / "davis", n_videos=2, n_frames=4, size=(24, 32), seed=0)


def frame_of(root, seq, k): return root / "JPEGImages/480p" / seq / f"{k:05d}.jpg"
def mask_of(root, seq, k): return root / "Annotations/480p" / seq / f"{k:05d}.png"


def test_tiny_set_opens(tiny):
    ds = DavisDataset(tiny)
    assert ds.names == ["synth-00", "synth-01"] and all(len(s) == 4 and s.size == (24, 32) for s in ds)


def test_missing_first_frame_mask(tiny):
    mask_of(tiny, "synth-01", 0).unlink()
    with pytest.raises(FileNotFoundError, match=r"synth-01/00000\.png"): DavisDataset(tiny)
    assert len(DavisDataset(tiny, labelled=False)) == 2  # as unlabelled video it is fine


def test_missing_mask_folder_of_a_sequence(tiny):
    shutil.rmtree(tiny / "Annotations/480p/synth-00")
    with pytest.raises(FileNotFoundError, match=r"synth-00/00000\.png"): DavisDataset(tiny)


def test_frame_mask_size_mismatch(tiny):
    write_mask(mask_of(tiny, "synth-00", 2), np.zeros((24, 30), np.uint8))
    with pytest.raises(ValueError, match=r"synth-00/00002\.png.*24x30"): DavisDataset(tiny)


def test_frame_size_mismatch(tiny):
    write_frame(frame_of(tiny, "synth-00", 3), np.zeros((20, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"synth-00/00003\.jpg"): DavisDataset(tiny, labelled=False)


def test_mask_without_frame(tiny):
    frame_of(tiny, "synth-00", 3).unlink()
    with pytest.raises(FileNotFoundError, match=r"mask .*synth-00/00003\.png has no frame"): DavisDataset(tiny)


def test_gap_in_frame_numbering(tiny):
    frame_of(tiny, "synth-01", 1).unlink(); mask_of(tiny, "synth-01", 1).unlink()
    with pytest.raises(FileNotFoundError, match=r"synth-01/00001\.jpg is missing"): DavisDataset(tiny)
    with pytest.raises(FileNotFoundError, match=r"synth-01/00001\.jpg is missing"): DavisDataset(tiny, labelled=False)


def test_unknown_colours_in_rgb_mask(tiny):
    rgb = DAVIS_PALETTE[read_mask(mask_of(tiny, "synth-00", 2))].copy()
    rgb[0, 0] = (10, 20, 30)
    Image.fromarray(rgb).save(mask_of(tiny, "synth-00", 2))
    with pytest.raises(ValueError, match=r"synth-00/00002\.png.*\(10,20,30\)"): DavisDataset(tiny)


def test_truncated_jpeg(tiny):
    p = frame_of(tiny, "synth-00", 2)
    p.write_bytes(p.read_bytes()[:-50])
    with pytest.raises(ValueError, match=r"truncated JPEG .*synth-00/00002\.jpg"): DavisDataset(tiny)


def test_truncated_png_mask(tiny):
    p = mask_of(tiny, "synth-01", 3)
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"synth-01/00003\.png"): DavisDataset(tiny)


def test_later_decode_error_names_the_file(tiny):
    p = frame_of(tiny, "synth-00", 1)
    seq = DavisDataset(tiny)["synth-00"]
    data = p.read_bytes()
    p.write_bytes(data[:len(data) // 3] + b"\xff\xd9")  # markers intact, scan data cut: passes the open-time check
    with pytest.raises(ValueError, match=r"synth-00/00001\.jpg"): seq.frame(1)


def test_split_file_naming_a_missing_sequence(tiny):
    split = tiny / "ImageSets/2017/val.txt"
    split.write_text(split.read_text() + "ghost\n")
    with pytest.raises(FileNotFoundError, match=r"val\.txt names sequence 'ghost'"): DavisDataset(tiny, "val")
    assert len(DavisDataset(tiny, "train")) == 2
    with pytest.raises(FileNotFoundError, match="ghost"): DavisDataset(tiny, sequences=["ghost"])


def test_missing_split_file_scans_folders(tiny):
    (tiny / "ImageSets/2017/val.txt").unlink()
    assert DavisDataset(tiny, "val").names == ["synth-00", "synth-01"]


def test_empty_folders(tmp_path, tiny):
    d0 = tmp_path / "d0"; d0.mkdir()
    for opener in (DavisDataset, YouTubeVOSDataset, VideoFolder, open_videos, detect_layout):
        with pytest.raises(ValueError, match=r"d0 is an empty folder"): opener(d0)
    (d0 / "readme.txt").write_text("not data")
    with pytest.raises(FileNotFoundError, match="JPEGImages/480p"): DavisDataset(d0)
    with pytest.raises(ValueError, match="cannot tell"): open_videos(d0)
    with pytest.raises(FileNotFoundError, match="nothing-here"): open_videos(tmp_path / "nothing-here")
    for p in (tiny / "JPEGImages/480p/synth-01").iterdir(): p.unlink()
    with pytest.raises(ValueError, match=r"no frames .*synth-01"): DavisDataset(tiny, labelled=False)


# ---------------------------------------------------------------- own videos and YouTube-VOS

def encode_video(path, frames, rate=10):
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=rate)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")): c.mux(pkt)
        for pkt in s.encode(): c.mux(pkt)


def ramp_frames(n, h=32, w=48):
    "Frame t is flat grey 20 + 20 t: easy to recognise after lossy coding."
    return np.stack([np.full((h, w, 3), 20 + 20 * t, np.uint8) for t in range(n)])


def test_video_file(tmp_path):
    encode_video(tmp_path / "clip.mp4", ramp_frames(7))
    assert detect_layout(tmp_path) == "video-files" and detect_layout(tmp_path / "clip.mp4") == "video-file"
    for root in (tmp_path, tmp_path / "clip.mp4"):
        seq = open_videos(root)[0]
        assert (seq.name, len(seq), seq.size) == ("clip", 7, (32, 48))
        got = seq.frames([6, 0, 3])
        assert got.shape == (3, 32, 48, 3) and np.abs(got.mean((1, 2, 3)) - [140, 20, 80]).max() < 4
        assert [p.stem for p in seq.frame_paths] == [f"{i:05d}" for i in range(7)]
    clips = ClipDataset(open_videos(tmp_path), short_side=32, crop=32, sampling="kinetics")
    assert clips[0]["main"].shape == (5, 3, 32, 32)


def test_broken_video_file(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"bad\.mp4"): open_videos(tmp_path)


def test_frame_folders(tmp_path):
    for name, n in (("walk", 11), ("run", 5)):
        for t in range(n): write_frame(tmp_path / name / f"img{t}.png", ramp_frames(n)[t])
    (tmp_path / "notes").mkdir()  # a folder without images is not a video
    encode_video(tmp_path / "zoom.avi", ramp_frames(5))
    assert detect_layout(tmp_path) == "frame-folders+video-files"
    vf = open_videos(tmp_path)
    assert isinstance(vf, VideoFolder) and vf.names == ["run", "walk", "zoom"] and not vf.labelled
    walk = vf["walk"]
    assert [p.name for p in walk.frame_paths][:3] == ["img0.png", "img1.png", "img2.png"] and walk.frame_paths[-1].name == "img10.png"
    assert walk.frame(10)[0, 0, 0] == 220 and walk.mask(0) is None
    assert detect_layout(tmp_path / "walk") == "frames" and open_videos(tmp_path / "walk").names == ["walk"]
    write_frame(tmp_path / "run" / "img5.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match=r"run/img5\.png"): open_videos(tmp_path)


def make_ytvos(root, with_meta=True):
    "A 2-video YouTube-VOS train set; object 2 of `a` first appears at the third listed frame (raw frame 00010)."
    stems = ["00000", "00005", "00010", "00015", "00020"]
    lab = np.zeros((5, 24, 40), np.uint8)
    lab[:, 2:10, 2:12] = 1
    lab[2:, 12:20, 20:36] = 2
    meta = {"videos": {}}
    for name in ("a", "b"):
        n_obj = 2 if name == "a" else 1
        for t, s in enumerate(stems):
            write_frame(root / "train/JPEGImages" / name / f"{s}.jpg", DAVIS_PALETTE[lab[t] if n_obj == 2 else lab[t] * (lab[t] == 1)])
            write_mask(root / "train/Annotations" / name / f"{s}.png", lab[t] if n_obj == 2 else lab[t] * (lab[t] == 1))
        meta["videos"][name] = {"objects": {"1": {"category": "x", "frames": stems}}}
        if n_obj == 2: meta["videos"][name]["objects"]["2"] = {"category": "y", "frames": stems[2:]}
    if with_meta: (root / "train/meta.json").write_text(json.dumps(meta))
    return root, lab


def test_ytvos_layout(tmp_path):
    root, lab = make_ytvos(tmp_path)
    assert detect_layout(root) == "ytvos"
    for ds in (open_videos(root), YouTubeVOSDataset(root / "train"), YouTubeVOSDataset(root, "train")):
        assert ds.layout == "ytvos" and ds.names == ["a", "b"]
        a = ds["a"]
        assert a.object_ids == [1, 2] and a.first_appearance == {1: 0, 2: 2} and len(a) == 5
        assert [p.stem for p in a.frame_paths] == ["00000", "00005", "00010", "00015", "00020"]
        assert np.array_equal(a.mask(2), lab[2]) and 2 not in a.mask(1)
        assert ds["b"].object_ids == [1]
    (tmp_path / "train/meta.json").unlink()  # without meta.json: objects from the masks
    assert open_videos(root)["a"].first_appearance == {1: 0, 2: 2}


def test_ytvos_valid_style_sparse_masks(tmp_path):
    root, lab = make_ytvos(tmp_path)
    for s in ("00005", "00015", "00020"): (root / "train/Annotations/a" / f"{s}.png").unlink()  # only first appearances
    a = open_videos(root)["a"]
    assert [p is not None for p in a.mask_paths] == [True, False, True, False, False] and a.first_appearance[2] == 2
    (root / "train/Annotations/a/00010.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"a/00010\.png.*object 2"): open_videos(root)


def test_ytvos_bad_meta(tmp_path):
    root, _ = make_ytvos(tmp_path)
    meta = json.loads((root / "train/meta.json").read_text())
    meta["videos"]["ghost"] = meta["videos"]["a"]
    (root / "train/meta.json").write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match=r"meta\.json names sequence 'ghost'"): open_videos(root)
    (root / "train/meta.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"meta\.json"): open_videos(root)


def test_detect_layout_on_shared_roots(shared):
    assert [detect_layout(p) for p in (shared.davis, shared.video, shared.fixtures)] == ["davis"] * 3
    with pytest.raises(ValueError, match="cannot tell"): detect_layout(shared.results)


def test_detect_layout_davis_resolutions(tiny):
    (tiny / "JPEGImages/480p").rename(tiny / "JPEGImages/Full-Resolution")
    with pytest.raises(ValueError, match=r"without JPEGImages/480p.*Full-Resolution"): detect_layout(tiny)
    assert detect_layout(tiny, resolution="Full-Resolution") == "davis"
    assert len(open_videos(tiny, resolution="Full-Resolution", labelled=False)) == 2


# ---------------------------------------------------------------- masks that are not label maps, object-id gaps, more bad input

def antialiased_mask(size=(480, 854), boxes=((60, 100, 300, 400), (150, 500, 420, 800)), resample=Image.Resampling.LANCZOS):
    "A 0/255 mask of filled ellipses (y0, x0, y1, x1) drawn at 4x size and shrunk (LANCZOS): grey levels along the edges."
    from PIL import ImageDraw
    big = Image.new("L", (4 * size[1], 4 * size[0]), 0)
    for y0, x0, y1, x1 in boxes: ImageDraw.Draw(big).ellipse([4 * x0, 4 * y0, 4 * x1, 4 * y1], fill=255)
    return np.array(big.resize((size[1], size[0]), resample))


def test_antialiased_grey_mask_is_an_error(tmp_path, tiny):
    aa = antialiased_mask()
    n_grey = len(set(np.unique(aa).tolist()) - {0, 255})
    assert n_grey > MAX_OBJECT_IDS  # the old reading: that many object ids
    Image.fromarray(aa).save(tmp_path / "aa.png")
    with pytest.raises(ValueError, match=rf"aa\.png is a greyscale image with anti-aliased edges \(values 0 and 255 plus {n_grey} "
                                         r"intermediate grey levels along their borders\), not a label map: threshold it"):
        read_mask(tmp_path / "aa.png")
    small = antialiased_mask((24, 32), ((4, 4, 20, 26),), Image.Resampling.BOX)  # fewer grey levels than the id limit: still caught
    assert 0 < len(set(np.unique(small).tolist()) - {0, 255}) <= MAX_OBJECT_IDS
    Image.fromarray(small).save(mask_of(tiny, "synth-00", 0))
    with pytest.raises(ValueError, match=r"synth-00/00000\.png is a greyscale image with anti-aliased edges"): DavisDataset(tiny)
    Image.fromarray(np.where(small > 127, 255, 0).astype(np.uint8)).save(mask_of(tiny, "synth-00", 0))  # the fix it names
    assert DavisDataset(tiny)["synth-00"].object_ids == [1]


def test_grey_label_maps_still_read(tmp_path):
    ids = np.zeros((40, 60), np.uint8); ids[2:20, 2:25] = 1; ids[22:38, 30:58] = 2; ids[15:30, 20:40] = VOID_ID
    Image.fromarray(ids).save(tmp_path / "ids_void.png")     # grey ids with void: not anti-aliasing
    assert np.array_equal(read_mask(tmp_path / "ids_void.png"), ids)
    Image.fromarray(ids.clip(0, 2)).save(tmp_path / "ids.png")
    assert np.array_equal(read_mask(tmp_path / "ids.png"), ids.clip(0, 2))


def test_too_many_object_ids(tmp_path):
    many = (np.arange(40 * 60).reshape(40, 60) % 40).astype(np.uint8)  # 39 object ids
    write_mask(tmp_path / "p.png", many)
    Image.fromarray(many).save(tmp_path / "l.png")
    Image.fromarray(DAVIS_PALETTE[many]).save(tmp_path / "rgb.png")
    for name in ("p.png", "l.png", "rgb.png"):
        with pytest.raises(ValueError, match=rf"{name} has 39 distinct object ids .*more than {MAX_OBJECT_IDS}.*DAVIS palette"):
            read_mask(tmp_path / name)
    limit = np.where(many > MAX_OBJECT_IDS, VOID_ID, many).astype(np.uint8)  # ids 1..20 and void: allowed (RVOS uses 20)
    write_mask(tmp_path / "limit.png", limit)
    assert np.array_equal(read_mask(tmp_path / "limit.png"), limit)


def test_real_masks_read_as_before(fixtures_root, davis_root, results_root):
    for src in [*real_annotations(fixtures_root, davis_root), *sorted((results_root / "rvos/dance-twirl").glob("*.png"))[:10]]:
        assert np.array_equal(read_mask(src), np.array(Image.open(src))), src


def gap_set(root):
    "A 1-sequence DAVIS set whose masks hold ids 1 and 3 (no 2), plus results equal to the ground truth."
    lab = np.zeros((24, 32), np.uint8); lab[2:10, 2:10] = 1; lab[12:20, 16:28] = 3
    for t in range(4):
        write_frame(frame_of(root, "gap", t), np.zeros((24, 32, 3), np.uint8))
        write_mask(mask_of(root, "gap", t), lab)
        write_mask(root / "results/gap" / f"{t:05d}.png", lab)
    return root


def test_object_id_gap_same_rule_in_propagation_and_evaluation(tmp_path):
    from dense_ulearn.evaluate import evaluate_sequence
    from dense_ulearn.propagate import sequence_objects
    root = gap_set(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # opening does not warn: the two users of the ids do
        seq = DavisDataset(root, split=None)["gap"]
    assert seq.object_ids == [1, 3]
    with pytest.warns(ObjectIdGapWarning, match=r"gap/00000\.png has object ids \[1, 3\] but not \[2\].*as the official.*renumber"):
        ids, first = sequence_objects(seq)
    assert ids == [1, 3] and sorted(first[0].unique().tolist()) == [0, 1, 2]  # propagation follows the ids present
    with pytest.warns(ObjectIdGapWarning, match=r"gap/00000\.png"):
        per_frame = evaluate_sequence(seq, root / "results")
    assert sorted(set(per_frame.Object)) == [1, 2, 3]  # evaluation counts 1..max id, as the official code does
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert first_frame_object_ids(np.array([[0, 1], [2, VOID_ID]], np.uint8), "x.png") == [1, 2]


def test_empty_frame_folder_with_masks(tiny, tmp_path):
    for p in (tiny / "JPEGImages/480p/synth-01").iterdir(): p.unlink()
    with pytest.raises(ValueError, match=r"frame folder .*JPEGImages/480p/synth-01 has no frames \(\*\.jpg\) but .*synth-01 has 4 mask"):
        DavisDataset(tiny)
    root, _ = make_ytvos(tmp_path / "yt")
    for p in (root / "train/JPEGImages/b").iterdir(): p.unlink()
    with pytest.raises(ValueError, match=r"frame folder .*JPEGImages/b has no frames"): YouTubeVOSDataset(root)


def test_mask_folder_without_frame_folder(tiny):
    shutil.copytree(tiny / "Annotations/480p/synth-01", tiny / "Annotations/480p/lost")
    (tiny / "ImageSets/2017/val.txt").unlink()  # sequences found by scanning JPEGImages: "lost" would drop out silently
    with pytest.raises(FileNotFoundError, match=r"mask folder .*Annotations/480p/lost has no frame folder .*JPEGImages/480p/lost"):
        DavisDataset(tiny, "val")
    assert len(DavisDataset(tiny, labelled=False)) == 2


def test_split_file_unreadable_or_empty(tiny):
    split = tiny / "ImageSets/2017/val.txt"
    split.write_bytes(b"\xff\xfe\x00\x80garbage")
    with pytest.raises(ValueError, match=r"cannot read split file .*val\.txt"): DavisDataset(tiny, "val")
    split.write_text("\n  \n")
    with pytest.raises(ValueError, match=r"split file .*val\.txt lists no sequences"): DavisDataset(tiny, "val")


def test_odd_files_in_frame_folders(tiny):
    frame_of(tiny, "synth-00", 2).write_bytes(b"")
    with pytest.raises(ValueError, match=r"synth-00/00002\.jpg is empty \(0 bytes\)"): DavisDataset(tiny)
    write_frame(frame_of(tiny, "synth-00", 2), np.zeros((24, 32, 3), np.uint8))
    mask_of(tiny, "synth-01", 1).write_bytes(b"")
    with pytest.raises(ValueError, match=r"synth-01/00001\.png is empty"): DavisDataset(tiny)
    write_mask(mask_of(tiny, "synth-01", 1), np.zeros((24, 32), np.uint8))
    (tiny / "JPEGImages/480p/synth-00/._00000.jpg").write_bytes(b"\x00\x05\x16\x07")  # macOS litter: skipped
    (tiny / "JPEGImages/480p/synth-00/notes.txt").write_text("not a frame")            # no image extension: skipped
    assert len(DavisDataset(tiny)["synth-00"]) == 4
    frame_of(tiny, "synth-01", 4).mkdir()
    with pytest.raises(ValueError, match=r"synth-01/00004\.jpg is a folder"): DavisDataset(tiny)


def test_ytvos_malformed_meta_entries(tmp_path):
    root, _ = make_ytvos(tmp_path)
    meta = json.loads((root / "train/meta.json").read_text())
    del meta["videos"]["a"]["objects"]["2"]["frames"]
    (root / "train/meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta\.json: object '2' of a needs an integer id and a \"frames\" list"): open_videos(root)
    (root / "train/meta.json").write_bytes(b"\xff\xfe\x80")
    with pytest.raises(ValueError, match=r"cannot read .*meta\.json"): open_videos(root)


def noise_frames(n, h=32, w=48, seed=0):
    "Random frames: large packets, so a file cut in half loses most of them."
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_truncated_and_random_video_files(tmp_path):
    encode_video(tmp_path / "clip.mp4", noise_frames(20))
    data = (tmp_path / "clip.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot decode video file .*half\.mp4 \(damaged, truncated or not a video: re-encode it"):
        VideoFolder(tmp_path / "half.mp4")
    (tmp_path / "broken.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"broken\.mp4 \(damaged"): VideoFolder(tmp_path / "broken.mp4")
    seq = VideoFolder(tmp_path / "clip.mp4")[0]
    (tmp_path / "clip.mp4").write_bytes(data[:len(data) // 2])  # damaged after it was opened
    with pytest.raises(ValueError, match=r"clip\.mp4 \((damaged|re-encode)"): seq.frames([0, 19])


def test_broken_video_in_dataloader_worker(tmp_path):
    encode_video(tmp_path / "full.avi", noise_frames(20))
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "half.avi").write_bytes(data[:len(data) // 2])  # the header still lists 20 frames: it opens
    (tmp_path / "full.avi").unlink()
    clips = ClipDataset(open_videos(tmp_path), short_side=32, crop=32, sampling="kinetics", frame_gap=10)
    loader = torch.utils.data.DataLoader(clips, batch_size=1, num_workers=1)
    with pytest.raises(ValueError) as caught: next(iter(loader))
    assert "Caught ValueError in DataLoader worker process 0" in str(caught.value) and "Original Traceback" in str(caught.value)
    msg = worker_error_message(caught.value)
    assert "\n" not in msg and re.match(r"training video 'half': video file .*half\.avi is truncated or damaged \(re-encode it", msg), msg
    assert worker_error_message(ValueError("not from a worker")) is None
    assert worker_error_message(RuntimeError("Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most "
                                             "recent call last):\nRuntimeError: a bug keeps its traceback")) is None


def test_damaged_frame_in_a_clip_names_video_file_and_fix(tiny):
    seq = DavisDataset(tiny, labelled=False)
    p = frame_of(tiny, "synth-00", 1)
    data = p.read_bytes()
    p.write_bytes(data[:len(data) // 3] + b"\xff\xd9")  # damaged after opening
    clips = ClipDataset(seq, frames_per_clip=4, short_side=24, crop=24, sampling="kinetics")
    with pytest.raises(ValueError, match=rf"^training video 'synth-00': cannot decode frame {re.escape(str(p))} \(a damaged file: replace it"):
        clips[0]
