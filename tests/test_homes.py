"""One home for every picture helper: each is defined once in the package, in dense_ulearn/viz.py (nbs/00b_viz.ipynb)."""
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dense_ulearn"
PICTURE_HELPERS = ("overlay_mask", "overlay_outlined", "mask_boundary", "downscale", "thumbnail", "show_images",
                   "show_sequences", "new_figure", "figure_to_array", "figure_png", "save_figure", "compact_png",
                   "PANEL_INCHES", "anchor_colors", "pseudo_label_colours", "pseudo_label_panel", "show_pseudo_labels",
                   "pca_basis", "features_to_rgb")
REPLACED = ("feature_pca", "paint_labels", "view_pictures")  # now viz.features_to_rgb, viz.pseudo_label_colours, denormalize


def homes(name: str) -> list[str]:
    "The package's modules with a top-level definition of `name` (def, class or assignment), once per definition."
    pattern = re.compile(rf"^(?:def|class)\s+{name}\b|^{name}\s*[:=]", re.M)
    return [p.name for p in sorted(PACKAGE.glob("*.py")) for _ in pattern.finditer(p.read_text())]


@pytest.mark.parametrize("name", PICTURE_HELPERS)
def test_picture_helper_is_defined_once_in_viz(name):
    assert homes(name) == ["viz.py"], (f"{name} is defined in {homes(name)}: define it once, in nbs/00b_viz.ipynb, "
                                       "and import it from dense_ulearn.viz")


@pytest.mark.parametrize("name", REPLACED)
def test_replaced_picture_helper_is_gone(name):
    assert homes(name) == [], f"{name} is back in {homes(name)}; the pictures use dense_ulearn.viz"


def test_package_draws_without_pyplot():
    "One convention: a function that draws returns a figure from `viz.new_figure`, never a pyplot figure."
    users = [p.name for p in sorted(PACKAGE.glob("*.py")) if re.search(r"matplotlib\.pyplot|from matplotlib import pyplot", p.read_text())]
    assert users == [], f"{users} use pyplot; draw with dense_ulearn.viz.new_figure"
