"""One home for every picture helper (dense_ulearn/viz.py, nbs/00b_viz.ipynb) and for every command-line, data, device and training-step rule."""
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


RULE_HOMES = {  # a command-line, data, device or training-step rule -> the one module that defines it
    "find_data": "options.py", "resolve_device": "options.py", "prepare_output": "options.py", "fast_bf16": "options.py",
    "add_data_flags": "cli.py", "add_device_flag": "cli.py", "add_output_flags": "cli.py",
    "encode_views": "losses.py", "losses_from_keys": "losses.py", "compute_losses": "losses.py", "batch_losses": "train.py",
}
GONE = ("add_data_args",)  # the data flags' old home in data.py: now cli.add_data_flags


@pytest.mark.parametrize("name, home", RULE_HOMES.items())
def test_rule_is_defined_once(name, home):
    assert homes(name) == [home], f"{name} is defined in {homes(name)}: define it once, in {home}, and import it"


@pytest.mark.parametrize("name", GONE)
def test_old_rule_home_is_gone(name):
    assert homes(name) == [], f"{name} is back in {homes(name)}"


def test_algorithm_modules_hold_no_command_line():
    "Flags are defined at the entry point (cli.py), not in algorithm modules."
    algorithm = ("augment", "clips", "data", "encoder", "losses", "propagate", "protocols", "features", "evaluate", "train",
                 "config", "checkpoints", "distributed", "viz", "explore", "explorer", "synthetic", "fixtures")
    users = [m for m in algorithm if "add_argument(" in (PACKAGE / f"{m}.py").read_text()]
    assert users == [], f"{users} define command-line flags: move them to dense_ulearn/cli.py"
