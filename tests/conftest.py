"""Shared pytest fixtures: where the real DAVIS data lives.

The project's test data is found as the package finds it (`dense_ulearn.options.shared_paths`): the
`DENSE_ULEARN_DATA` environment variable when it names that folder, else `../shared/data` beside the repository.
Without it the real-data tests are skipped — except under `CI=true`, where its absence fails them.
"""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def shared():
    from dense_ulearn.options import shared_paths
    paths = shared_paths()
    if paths is None:
        msg = ("real DAVIS data not found: set DENSE_ULEARN_DATA or put the shared data folder at "
               f"{REPO.parent / 'shared' / 'data'}")
        if in_ci(): pytest.fail(msg + " (required under CI=true)")
        pytest.skip(msg)
    return paths


@pytest.fixture(scope="session")
def davis_root(shared): return shared.davis


@pytest.fixture(scope="session")
def video_root(shared): return shared.video


@pytest.fixture(scope="session")
def results_root(shared): return shared.results


@pytest.fixture(scope="session")
def fixtures_root(shared): return shared.fixtures


@pytest.fixture
def run_cli():
    """Run `dense-ulearn ARGS...` in a subprocess (as `python -m dense_ulearn.cli`); returns CompletedProcess."""
    import subprocess
    def _run(*args, check=False, timeout=600, env=None, cwd=None):
        full_env = {**os.environ, **(env or {})}
        return subprocess.run([sys.executable, "-m", "dense_ulearn.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, check=check, env=full_env, cwd=cwd)
    return _run
