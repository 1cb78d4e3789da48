"""J&F evaluation (dense_ulearn.evaluate): equal to the official DAVIS-2017 numbers, hand-made cases, bad inputs."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from dense_ulearn.data import write_mask
from dense_ulearn.fixtures import tiny_davis
from dense_ulearn.evaluate import (GLOBAL_COLUMNS, OBJECT_COLUMNS, EvalResult, db_eval_boundary,
                                   db_eval_boundary_reference, db_eval_iou, decay_boundaries, db_statistics,
                                   evaluate_davis, read_result_mask, result_paths, seg2bmap, seg2bmap_reference,
                                   write_results)

TOL = 1e-6  # the bar; in practice the numbers agree bit for bit
FIXTURE_SEQUENCES = ["bear", "blackswan", "tennis", "train"]


def _official(results_root, table):
    return pd.read_csv(results_root / f"official-osvos-per-{table}.csv", dtype={"Frame": str})


def _max_diff(ours: pd.DataFrame, official: pd.DataFrame, keys, columns) -> float:
    both = ours.merge(official, on=keys, suffixes=("", "_official"), validate="1:1")
    assert len(both) == len(official) == len(ours), "rows differ from the official table"
    return max(float(np.abs(both[c] - both[c + "_official"]).max()) for c in columns)


def _official_global(per_object: pd.DataFrame) -> np.ndarray:
    "The official global row from the official per-object table (means over objects)."
    means = [per_object[c].mean() for c in GLOBAL_COLUMNS[1:]]
    return np.array([(means[0] + means[3]) / 2, *means])


def _check_osvos(result: EvalResult, results_root, sequences):
    per_frame, per_object = _official(results_root, "frame"), _official(results_root, "object")
    per_frame, per_object = per_frame[per_frame.Sequence.isin(sequences)], per_object[per_object.Sequence.isin(sequences)]
    assert _max_diff(result.per_frame, per_frame, ["Sequence", "Object", "Frame"], ["J", "F"]) <= TOL
    assert _max_diff(result.per_object, per_object, ["Sequence", "Object"], OBJECT_COLUMNS[2:]) <= TOL
    np.testing.assert_allclose(result.global_.to_numpy()[0], _official_global(per_object), rtol=0, atol=TOL)


# ---------------------------------------------------------------- real data: the official numbers

def test_osvos_all_sequences_equal_official_per_frame_object_global(davis_root, results_root):
    result = evaluate_davis(davis_root, results_root / "osvos", workers=2, progress=False)
    assert result.per_frame.Sequence.unique().tolist() == (davis_root / "ImageSets/2017/val.txt").read_text().split()
    _check_osvos(result, results_root, result.per_frame.Sequence.unique())
    # the rounded global numbers of the data README
    np.testing.assert_allclose(result.global_[["J&F-Mean", "J-Mean", "F-Mean"]].to_numpy()[0],
                               [0.8177, 0.8105, 0.8249], atol=5e-5)


def test_fixtures_with_void_and_several_objects_equal_official_per_frame(fixtures_root):
    result = evaluate_davis(fixtures_root, fixtures_root / "results-previous-frame", split="fixtures",
                            exclude_first_last=False, progress=False)
    official = pd.read_csv(fixtures_root / "official-previous-frame-per-frame.csv", dtype={"Frame": str})
    assert _max_diff(result.per_frame, official, ["Sequence", "Object", "Frame"], ["J", "F"]) <= TOL
    tennis = result.per_frame.query("Sequence == 'tennis' and Frame == '00000'")
    assert tennis.J.tolist()[0] < 1  # the result covers void: penalised, as in the semi-supervised evaluation
    assert result.per_object.groupby("Sequence").Object.max().to_dict() == {"bear": 1, "blackswan": 1, "tennis": 2, "train": 4}


def test_live_official_package_agrees(davis_root, results_root):
    pytest.importorskip("davis2017")  # skipped only when the official package is not installed
    from davis2017.evaluation import DAVISEvaluation
    sequences = ["blackswan", "car-shadow"]
    official = DAVISEvaluation(davis_root=str(davis_root), task="semi-supervised", gt_set="val",
                               sequences=sequences).evaluate(str(results_root / "osvos"))
    ours = evaluate_davis(davis_root, results_root / "osvos", sequences=sequences, progress=False).per_object
    for metric in ("J", "F"):
        for stat, column in (("M", "Mean"), ("R", "Recall"), ("D", "Decay")):
            np.testing.assert_allclose(ours[f"{metric}-{column}"], official[metric][stat], rtol=0, atol=TOL)


# ---------------------------------------------------------------- hand-made cases

@pytest.fixture
def box_mask():
    m = np.zeros((480, 854), bool)
    m[100:300, 200:500] = True
    return m


def test_perfect_result_scores_one(box_mask):
    assert db_eval_iou(box_mask, box_mask) == 1.0 and db_eval_boundary(box_mask, box_mask) == 1.0


def test_empty_cases_as_the_official_code_defines_them(box_mask):
    empty = np.zeros_like(box_mask)
    assert (db_eval_iou(empty, empty), db_eval_boundary(empty, empty)) == (1.0, 1.0)      # absent and not found
    assert (db_eval_iou(box_mask, empty), db_eval_boundary(box_mask, empty)) == (0.0, 0.0)  # missed: P=1, R=0
    assert (db_eval_iou(empty, box_mask), db_eval_boundary(empty, box_mask)) == (0.0, 0.0)  # hallucinated: P=0, R=1


@pytest.mark.parametrize("shift", [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1)])
def test_one_pixel_shift_keeps_f_at_one(box_mask, shift):
    moved = np.roll(box_mask, shift, axis=(0, 1))
    assert db_eval_boundary(box_mask, moved) == 1.0
    assert db_eval_iou(box_mask, moved) < 1.0


def test_shift_beyond_the_tolerance_lowers_f(box_mask):
    assert db_eval_boundary(box_mask, np.roll(box_mask, 8, axis=0)) == 1.0  # 8 px: on the tolerance radius
    assert db_eval_boundary(box_mask, np.roll(box_mask, 9, axis=0)) < 1.0


@pytest.mark.parametrize("bound_th", [0.008, 2, 0.05])
def test_fast_f_equals_literal_dilation(bound_th):
    rng = np.random.default_rng(7)
    for _ in range(10):
        a, b = (ndimage.gaussian_filter(rng.standard_normal((50, 80)), 3) > rng.uniform(-0.1, 0.1) for _ in range(2))
        assert db_eval_boundary(a, b, bound_th) == db_eval_boundary_reference(a, b, bound_th)


def test_seg2bmap_equals_the_pixel_rule():
    rng = np.random.default_rng(3)
    for shape in [(9, 11), (1, 7), (7, 1)]:
        m = rng.random(shape) < 0.4
        np.testing.assert_array_equal(seg2bmap(m), seg2bmap_reference(m))


def test_decay_boundaries_round_half_up():
    assert decay_boundaries(11).tolist() == [0, 3, 5, 8, 10]
    assert decay_boundaries(79)[1] == 20


def test_statistics_of_a_ramp():
    values = np.arange(11) / 10
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(0.5) and recall == pytest.approx(5 / 11)
    assert decay == pytest.approx(values[0:4].mean() - values[8:11].mean())  # bins share their end points


# ---------------------------------------------------------------- bad inputs

@pytest.fixture
def tiny(tmp_path):
    return tiny_davis(tmp_path)


def _evaluate(root, **kw):
    return evaluate_davis(root, root / "res", progress=False, **kw)


def test_tiny_perfect_results(tiny):
    result = _evaluate(tiny)
    assert result.per_frame.Frame.unique().tolist() == ["00001", "00002", "00003"]  # first and last not scored
    assert result.global_.to_numpy()[0].tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]


def test_fewer_objects_in_result_score_as_empty(tiny):
    for f in (tiny / "res/toy").iterdir():
        ids = read_result_mask(f, "toy", f.stem)
        write_mask(f, np.where(ids == 2, 0, ids))  # object 2 never found
    per_object = _evaluate(tiny).per_object
    assert per_object["J-Mean"].tolist() == [1.0, 0.0] and per_object["F-Mean"].tolist() == [1.0, 0.0]


def _break(tiny, frame="00002"):
    "Path of a result frame and its ids, to be overwritten by a test."
    path = tiny / "res/toy" / f"{frame}.png"
    return path, read_result_mask(path, "toy", frame)


@pytest.mark.parametrize("workers", [1, 2])
def test_id_not_in_ground_truth(tiny, workers):
    path, ids = _break(tiny)
    write_mask(path, np.where(ids == 2, 3, ids))
    with pytest.raises(ValueError, match=r"sequence 'toy', frame 00002: result has object id\(s\) \[3\] that are not in the ground truth"):
        _evaluate(tiny, workers=workers)


def test_wrong_size(tiny):
    path, ids = _break(tiny)
    write_mask(path, ids[:, :-1])
    with pytest.raises(ValueError, match=r"sequence 'toy', frame 00002: result is 31x24 but the ground truth is 32x24"):
        _evaluate(tiny)


@pytest.mark.parametrize("mode", ["RGB", "LA", "RGBA", "I;16"])
def test_non_label_modes_rejected(tiny, mode):
    path, ids = _break(tiny)
    Image.fromarray(ids * 100, "L").convert(mode).save(path)
    with pytest.raises(ValueError, match=rf"sequence 'toy', frame 00002: result .* is a '{mode}' image"):
        _evaluate(tiny)


def test_greyscale_binary_mask_rejected(tiny):
    path, ids = _break(tiny)
    Image.fromarray(np.where(ids > 0, 255, 0).astype(np.uint8), "L").save(path)
    with pytest.raises(ValueError, match=r"sequence 'toy', frame 00002: .*greyscale image containing 255"):
        _evaluate(tiny)


def test_single_channel_label_map_accepted(tiny):
    path, ids = _break(tiny)
    Image.fromarray(ids, "L").save(path)
    assert _evaluate(tiny).global_["J&F-Mean"][0] == 1.0


def test_missing_frames_named(tiny):
    for frame in ("00001", "00003"): (tiny / f"res/toy/{frame}.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"sequence 'toy': result frame\(s\) 00001, 00003 missing"):
        _evaluate(tiny)


def test_first_and_last_frame_not_needed(tiny):
    for frame in ("00000", "00004"): (tiny / f"res/toy/{frame}.png").unlink()
    assert _evaluate(tiny).global_["J-Mean"][0] == 1.0


def test_empty_and_missing_folders(tiny):
    seq_dir = tiny / "res/toy"
    for f in seq_dir.iterdir(): f.unlink()
    with pytest.raises(FileNotFoundError, match=r"sequence 'toy': result folder .* is empty"):
        _evaluate(tiny)
    seq_dir.rmdir()
    with pytest.raises(ValueError, match=r"results folder .* is empty"):
        _evaluate(tiny)
    (tiny / "res/other").mkdir()
    with pytest.raises(FileNotFoundError, match=r"sequence 'toy': result folder .*toy not found"):
        _evaluate(tiny)
    with pytest.raises(FileNotFoundError, match="results folder .* not found"):
        evaluate_davis(tiny, tiny / "nowhere", progress=False)


def test_undecodable_result(tiny):
    path, _ = _break(tiny)
    path.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"sequence 'toy', frame 00002: cannot decode"):
        _evaluate(tiny)


# ---------------------------------------------------------------- writing the tables

def test_write_results_full_precision_no_overwrite_read_only(tiny, tmp_path):
    result = _evaluate(tiny)
    result.per_frame.loc[0, "J"] = 1 / 3  # a number that needs all its digits
    result = EvalResult.from_per_frame(result.per_frame)
    out = tmp_path / "tables"
    paths = write_results(result, out)
    assert set(paths) == {"global_", "per_sequence", "per_object", "per_frame"}
    assert paths["global_"].name == "global_results-val.csv" and paths["per_sequence"].name == "per-sequence_results-val.csv"
    assert paths["global_"].read_text().splitlines()[0] == ",".join(GLOBAL_COLUMNS)
    assert pd.read_csv(paths["per_sequence"]).Sequence.tolist() == ["toy_1", "toy_2"]
    np.testing.assert_array_equal(pd.read_csv(paths["global_"]).to_numpy(), result.global_.to_numpy())  # bit for bit
    np.testing.assert_array_equal(pd.read_csv(paths["per_object"])[OBJECT_COLUMNS[2:]].to_numpy(),
                                  result.per_object[OBJECT_COLUMNS[2:]].to_numpy())
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_results(result, out)
    write_results(result, out, overwrite=True)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="read-only"):
            write_results(result, read_only)
        assert not any(p.exists() for p in result_paths(read_only).values())
    finally:
        read_only.chmod(0o755)


def test_tables_of_another_tool_are_never_replaced(tiny):
    "The official evaluator writes global_results-val.csv into the results folder it scores: --overwrite leaves it."
    result, res = _evaluate(tiny), tiny / "res"
    theirs = res / "global_results-val.csv"
    theirs.write_text("J&F-Mean,J-Mean\n0.5,0.5\n")
    before = theirs.read_bytes()
    with pytest.raises(FileExistsError, match=r"global_results-val\.csv in .* not written by dense-ulearn.*--out DIR"):
        write_results(result, res, overwrite=True)
    assert theirs.read_bytes() == before
    assert not any(p.exists() for name, p in result_paths(res).items() if name != "global_")  # nothing written


def test_tables_in_a_propagated_masks_folder_can_be_replaced(tiny):
    "evaluate's default output is the masks folder, which propagate marked as `masks`: our tables there are ours."
    from dense_ulearn.options import mark_output, marked_files, read_marker
    result, res = _evaluate(tiny), tiny / "res"
    mark_output(res, "masks", files=["toy"])  # as propagate_dataset leaves it
    write_results(result, res)
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_results(result, res)
    write_results(result, res, overwrite=True)
    assert read_marker(res)["kind"] == "masks" and marked_files(res, "masks") == {"toy"}
    assert marked_files(res, "scores") == {p.name for p in result_paths(res).values()}


def test_tables_refused_in_the_ground_truth_or_a_file(tiny, tmp_path):
    result = _evaluate(tiny)
    with pytest.raises(ValueError, match="ground truth"):
        write_results(result, tiny / "Annotations" / "480p" / "tables")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="--out .*file is a file"):
        write_results(result, tmp_path / "file")
