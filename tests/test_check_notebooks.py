"""The notebook-output check (`.ci/check_notebooks.py`, run by `make test`) catches what it promises to catch."""
import base64
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_notebooks", REPO / ".ci" / "check_notebooks.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def _png(size: int = 32, noise: bool = False) -> str:
    pixels = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8) if noise else np.zeros((size, size, 3), np.uint8)
    buf = io.BytesIO(); Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _cell(source: str, outputs=()) -> dict:
    return {"cell_type": "code", "id": "c0ffee00", "metadata": {}, "execution_count": 1, "source": [source],
            "outputs": list(outputs)}


def _image(data: str) -> dict:
    return {"output_type": "display_data", "metadata": {}, "data": {"image/png": data, "text/plain": ["<Figure>"]}}


def _problems(tmp_path, name: str, *cells) -> list[str]:
    path = tmp_path / name
    path.write_text(json.dumps({"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    problems = []
    check.check_notebook(path, problems)
    return problems


def test_a_drawing_notebook_passes(tmp_path):
    assert _problems(tmp_path, "01_x.ipynb", _cell("# picture: a thing\nfig", [_image(_png())])) == []


def test_every_notebook_but_the_cli_must_draw(tmp_path):
    assert any("no image output" in p for p in _problems(tmp_path, "01_x.ipynb", _cell("x = 1")))
    assert _problems(tmp_path, "09_cli.ipynb", _cell("x = 1")) == []


def test_a_marked_cell_must_draw_after_nbdev_directives_too(tmp_path):
    drawn = _cell("fig", [_image(_png())])
    found = _problems(tmp_path, "01_x.ipynb", drawn, _cell("#| slow\n# picture: the gallery\ngallery()"))
    assert found and "a picture cell without an image output" in found[0]


def test_errors_big_images_and_machine_paths_are_caught(tmp_path):
    error = {"output_type": "error", "ename": "ValueError", "evalue": "x", "traceback": ["Traceback (most recent call last)"]}
    assert any("an error output" in p for p in _problems(tmp_path, "01_x.ipynb", _cell("fig", [_image(_png()), error])))
    big = _image(_png(size=400, noise=True))  # ~480 KB of noise: over the 150 KB limit
    assert any("limit 150 KB" in p for p in _problems(tmp_path, "01_x.ipynb", _cell("fig", [big])))
    path_out = {"output_type": "stream", "name": "stdout", "text": ["saved to /home/someone/runs/x\n"]}
    assert any("absolute path" in p for p in _problems(tmp_path, "01_x.ipynb", _cell("fig", [_image(_png()), path_out])))
