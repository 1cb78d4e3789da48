"""The project's own promises: packaging metadata, notebook/module layout, the `info` command."""
import json
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda name where they differ


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~ \[@;]", req, maxsplit=1)[0].strip().lower()


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_environment_yml_mirrors_pyproject_dependencies():
    env = (REPO / "environment.yml").read_text().lower()
    proj = _pyproject()["project"]
    names = [_requirement_name(r) for r in proj["dependencies"] + proj["optional-dependencies"]["dev"]]
    missing = [n for n in names if not re.search(rf"^\s*-\s*{re.escape(CONDA_NAMES.get(n, n))}\b", env, re.M)]
    assert not missing, f"environment.yml lacks {missing}"


def test_dependencies_have_lower_bounds_not_pins():
    for req in _pyproject()["project"]["dependencies"]:
        assert ">=" in req and "==" not in req, f"declare a lower bound, not a pin: {req}"


def test_nbdev_settings_live_in_pyproject_not_settings_ini():
    assert "nbdev" in _pyproject()["tool"], "pyproject.toml needs [tool.nbdev]"
    assert not (REPO / "settings.ini").exists(), "nbdev 3 ignores settings.ini; keep settings in pyproject.toml"


def test_every_module_has_its_numbered_notebook_and_the_readme_lists_it():
    readme = (REPO / "README.md").read_text()
    notebooks = sorted((REPO / "nbs").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks, "no numbered notebooks in nbs/"
    numbers = [nb.name[:2] for nb in notebooks]
    assert len(numbers) == len(set(numbers)), f"notebook numbers reused: {numbers}"
    for nb in notebooks:
        first = json.loads(nb.read_text())["cells"][0]
        match = re.search(r"#\|\s*default_exp\s+(\S+)", "".join(first["source"]))
        assert match, f"{nb.name}: first cell must be `#| default_exp <module>`"
        assert (REPO / "dense_ulearn" / f"{match[1]}.py").exists(), f"{nb.name}: module {match[1]}.py not exported"
        assert nb.name in readme, f"README.md's notebook map misses {nb.name}"


def test_info_reports_versions_device_and_data(run_cli, shared):
    res = run_cli("info")
    assert res.returncode == 0, res.stderr
    for word in ("torch", "device", "davis", str(shared.root)):
        assert word in res.stdout, res.stdout
    assert re.search(r"davis: .*\((\S+), 9 sequences\)", res.stdout), res.stdout
    assert re.search(r"video: .*\((\S+), 7 sequences\)", res.stdout), res.stdout


def test_cli_reports_bad_input_in_one_line(run_cli, tmp_path):
    res = run_cli("info", "--davis-root", tmp_path / "does-not-exist")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "--davis-root" in res.stderr and "does-not-exist" in res.stderr
