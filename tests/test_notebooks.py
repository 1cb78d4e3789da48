"""Pictures on any clone: notebooks 01, 03, 05 and 05c run with data discovery switched off (DENSE_ULEARN_DATA=none), as on a
fresh clone without data, and every cell marked `# picture:` draws an image; each notebook says which data it used."""
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP_FLAGS = re.compile(r"^#\|\s*(slow|notest|eval:\s*false)\b", re.M)  # cells nbdev-test does not run either
PICTURE = re.compile(r"^\s*#\s*picture:", re.I)


def run_notebook(path: Path):
    "Execute a notebook the way nbdev-test does (flagged cells skipped), in its folder; returns the executed cells."
    from fastcore.nbio import read_nb
    from execnb.shell import CaptureShell
    nb = read_nb(path)
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        shell = CaptureShell(path)
        shell.run_all(nb, exc_stop=True, preproc=lambda cell: bool(SKIP_FLAGS.search(cell.source)), cell_timeout=600)
    finally: os.chdir(cwd)
    return nb.cells


def images(cell) -> int:
    return sum(1 for o in cell.get("outputs", []) for mime in o.get("data", {}) if mime.startswith("image/"))


def printed(cells) -> str:
    return "".join("".join(o.get("text", "")) if isinstance(o.get("text", ""), (str, list)) else ""
                   for c in cells for o in c.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.parametrize("name", ["01_augment", "03_losses", "05_propagate", "05c_protocols"])
def test_pictures_draw_without_data(name, monkeypatch):
    monkeypatch.setenv("DENSE_ULEARN_DATA", "none")  # a clone without any data: the synthetic set
    monkeypatch.delenv("CI", raising=False)  # a user's clone, not CI: the notebooks' "test data required" checks stay off
    cells = run_notebook(REPO / "nbs" / f"{name}.ipynb")
    marked = [c for c in cells if c.cell_type == "code" and PICTURE.match(c.source)]
    assert marked, f"{name} marks no picture cell (# picture: ...)"
    empty = [c.source.splitlines()[0] for c in marked if not images(c)]
    assert not empty, f"{name}: picture cells without an image: {empty}"
    assert "synthetic" in printed(cells), f"{name} does not say that it draws on the synthetic set"
