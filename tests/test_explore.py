"""The affinity pictures (nbs/08_explore.ipynb) and the interactive explorer (nbs/08a_explorer.ipynb) on a tiny real DAVIS
clip at quarter size (120×214 frames)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from dense_ulearn.data import DavisDataset
from dense_ulearn.encoder import build_encoder
from dense_ulearn.explore import (GalleryConfig, encode_frames, find_checkpoint, load_clip, object_center, pixel_to_cell,
                                  pseudo_label_figure, query_affinity, save_gallery, show_affinity, show_features,
                                  show_propagation)
from dense_ulearn.explorer import build_explorer
from dense_ulearn.propagate import (PropagationConfig, context_frames, propagate, propagate_reference,
                                    reference_groups)

REPO = Path(__file__).resolve().parents[1]
SCALE = 0.25  # 480×854 -> 120×214 frames, 15×27 feature cells
N_FRAMES = 6
SMALL = PropagationConfig(radius=4, context=3)  # the radius and the duplicated reference slots both matter


@pytest.fixture(scope="module")
def davis(davis_root): return DavisDataset(davis_root, sequences=["blackswan", "car-shadow"])


@pytest.fixture(scope="module")
def clip(davis):
    "frames uint8 [6,120,214,3] and masks [120,214] of blackswan."
    return load_clip(davis["blackswan"], range(N_FRAMES), SCALE)


@pytest.fixture(scope="module")
def model(): return build_encoder(seed=0).eval()


@pytest.fixture(scope="module")
def feats(model, clip): return encode_frames(model, clip[0])  # [6,512,15,27]


@pytest.fixture(autouse=True)
def no_pyplot_left_open():
    yield
    assert plt.get_fignums() == [], "a function left a pyplot figure open"


def test_show_propagation_axes(clip):
    frames, masks = clip
    fig = show_propagation(frames, {"ground truth": masks, "first copied": [masks[0]] * N_FRAMES})
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * N_FRAMES
    with pytest.raises(ValueError, match="2 masks for 6 frames"): show_propagation(frames, masks[:2])


def test_show_features_axes(model, clip):
    fig = show_features(model, clip[0][:3])
    assert isinstance(fig, Figure) and len(fig.axes) == 6


def test_show_pseudo_labels_axes_and_anchor_labels(model, clip):
    fig = pseudo_label_figure(model, clip[0][:3])
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert model.training is False  # eval mode kept (and restored)


def test_show_affinity_axes(model, clip, feats):
    frames, masks = clip
    fig = show_affinity(model, frames, 5, object_center(masks[5], frames.shape[1:3]), masks, feats=feats)
    assert isinstance(fig, Figure) and len(fig.axes) == 5  # query, reference, 3 context frames
    assert fig.affinity.context == context_frames(0, 5, 20)
    fig = show_affinity(model, frames, 5, (10, 10), n_context=1, feats=feats)
    assert len(fig.axes) == 3
    fig = show_affinity(model, frames, 1, (10, 10))  # frame 1: the reference fills every slot; encodes frames 0 and 1
    assert len(fig.axes) == 2
    torch.testing.assert_close(fig.affinity.logits[0], query_affinity(feats, 1, (1, 1)).logits[0], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="outside"): show_affinity(model, frames, 1, (500, 10))


@pytest.mark.parametrize("oracle", [propagate, propagate_reference])
def test_affinity_rebuilds_propagation(feats, clip, oracle):
    "Σ_top-k w · m_c(q) with our weights and candidates equals propagation's soft mask at the query."
    h, w = feats.shape[-2:]
    groups = reference_groups({0: torch.as_tensor(clip[1][0]).long()}, 2, (h, w))
    soft = list(oracle(feats, groups, SMALL))  # [2,h,w] per frame
    for t, cell in [(1, (7, 13)), (3, (2, 25)), (5, (12, 4)), (5, (14, 26))]:
        aff = query_affinity(feats, t, cell, SMALL)
        vote = sum(wt * soft[f][:, r, c] for f, r, c, wt in aff.topk_cells())
        torch.testing.assert_close(vote, soft[t][:, cell[0], cell[1]], atol=1e-5, rtol=0)
        # the heat map's scores are the ones the top-k was taken from
        torch.testing.assert_close(torch.softmax(aff.logits.flatten()[aff.topk_index], 0), aff.topk_weight)


def test_affinity_weights_per_reference_location(feats):
    "With one label channel per reference location, propagation's output at frame 1 is the weight of each location."
    h, w = feats.shape[-2:]
    identity = reference_groups({0: torch.arange(h * w).view(h, w)}, h * w, (h, w))
    frame1 = list(propagate(feats[:2], identity, SMALL))[1]  # [hw,h,w]
    for cell in [(7, 13), (0, 0)]:
        weights = torch.zeros(h * w)
        for f, r, c, wt in query_affinity(feats, 1, cell, SMALL).topk_cells(): weights[r * w + c] += wt
        # float32: propagate's window sums and knn_reference's einsum differ in the 7th digit, ×1/τ = 20 in the logits
        torch.testing.assert_close(frame1[:, cell[0], cell[1]], weights, atol=1e-5, rtol=0)


def test_encode_frames_restores_mode(clip):
    enc = build_encoder(seed=0).train()
    x = encode_frames(enc, clip[0][:2], feature="key")
    assert x.shape == (2, 128, 15, 27) and enc.training
    torch.testing.assert_close(x.norm(dim=1), torch.ones(2, 15, 27))


def test_explorer_builds_headless(davis, model):
    ex = build_explorer([davis["blackswan"], davis["car-shadow"]], models={"random init": model}, scale=SCALE, cfg=SMALL)
    box = ex.build_widgets()
    assert box.children and ex.widgets["image"].value[:8] == b"\x89PNG\r\n\x1a\n"
    n = len(ex.latencies)
    ex.widgets["x"].value = 150  # the callback runs and redraws
    assert len(ex.latencies) == n + 1
    assert ex.affinity.query_cell == pixel_to_cell((150, ex.state["y"]), (120, 214), (15, 27))
    ex.widgets["frame"].value = 2
    assert ex.widgets["ref"].max == 1 and ex.affinity.query_frame == 2
    ex.widgets["sequence"].value = "car-shadow"
    assert ex.state["sequence"] == "car-shadow" and ex.affinity.context == context_frames(0, 2, SMALL.context)
    assert ex.click(20, 30) < 60  # seconds; a click only recomputes one query
    assert ex.affinity.query_cell == pixel_to_cell((20, 30), (120, 214), (15, 27))


def test_explorer_click_with_ipympl(davis, model):
    "With ipympl the picture is a canvas widget; a click on the query panel (as the browser sends it) moves the query."
    pytest.importorskip("ipympl")
    ex = build_explorer([davis["blackswan"]], models={"random init": model}, scale=SCALE, cfg=SMALL, clickable=True)
    ex.build_widgets()
    canvas = ex.widgets["view"].children[0]
    assert canvas is ex.figure.canvas
    x0, y0, x1, y1 = ex.figure.axes[0].bbox.extents  # display pixels, origin bottom-left
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    canvas.handle_event({"type": "button_press", "x": cx, "y": ex.figure.bbox.height - cy, "button": 0, "buttons": 1,
                         "modifiers": []})
    x, y = ex.figure.axes[0].transData.inverted().transform((cx, cy))  # the frame pixel clicked
    assert abs(ex.state["x"] - x) <= 1 and abs(ex.state["y"] - y) <= 1  # the canvas rounds to whole screen pixels
    assert ex.widgets["x"].value == ex.state["x"] and ex.widgets["y"].value == ex.state["y"]
    assert ex.affinity.query_cell == pixel_to_cell((ex.state["x"], ex.state["y"]), (120, 214), (15, 27))


def test_save_gallery_writes_pngs(davis, model, tmp_path):
    gallery = GalleryConfig(scale=0.125, length=4, n_columns=2, pseudo_frames=(0, 1), n_context=1)  # 60×107 frames
    paths = save_gallery(build_encoder(seed=1).eval(), model, [davis["blackswan"]], tmp_path, SMALL, gallery)
    assert [p.name for p in paths] == [f"blackswan_{k}.png" for k in ("affinity", "features", "pseudo_labels", "propagation")]
    for p in paths: assert Image.open(p).size[0] > 100
    with pytest.raises(ValueError, match="at least one model"): save_gallery(None, None, [davis["blackswan"]], tmp_path)


def test_find_checkpoint_explicit_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"): find_checkpoint(tmp_path / "missing.pt")


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_notebook_html_screenshot_is_not_blank(tmp_path):
    "Execute the notebook, export it to HTML, screenshot the page in headless Chromium: it must show something."
    browser = _browser()
    if browser is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}: pytest.fail("chromium is required under CI")
        pytest.skip("chromium not installed (make test-slow installs it)")
    nbconvert = [sys.executable, "-m", "jupyter", "nbconvert"]
    executed = tmp_path / "08_explore.ipynb"
    subprocess.run(nbconvert + ["--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=900",
                                "--output-dir", str(tmp_path), str(REPO / "nbs" / "08_explore.ipynb")],
                   check=True, cwd=REPO / "nbs", timeout=1800)
    outputs = [o for c in json.loads(executed.read_text())["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    n_pictures = sum(any(m.startswith("image/") for m in o.get("data", {})) for o in outputs)  # PNG, or JPEG when
    assert n_pictures >= 12, f"only {n_pictures} pictures: figures did not render in the kernel"  # a PNG is too big
    subprocess.run(nbconvert + ["--to", "html", "--output-dir", str(tmp_path), str(executed)], check=True, timeout=300)
    html, shot = tmp_path / "08_explore.html", tmp_path / "screenshot.png"
    assert html.stat().st_size > 100_000  # the pictures are embedded
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={shot}",
                    "--window-size=1280,2000", html.as_uri()], check=True, timeout=300, capture_output=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 10, f"screenshot looks blank (std {pixels.std():.1f})"
    assert (pixels < 200).mean() > 0.02, "screenshot has almost no dark pixels (text or pictures)"
