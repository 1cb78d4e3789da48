"""`dense_ulearn.download`: the DAVIS-2017 downloader, run end to end against a local HTTP server (no internet).

Each test builds a tiny DAVIS-2017-like archive (3 train + 2 val sequences of 3 frames, 8x8 JPEGs and palette PNG
masks) and serves it from 127.0.0.1 with HTTP Range support (`local_file_server`).
"""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dense_ulearn.download import (UNPACK_PREFIX, DavisLayoutError, DownloadError, check_davis_layout,
                                   download_davis2017, local_file_server, make_davis_archive)

REPO = Path(__file__).resolve().parents[1]
NAME = "DAVIS-2017-trainval-480p.zip"
TINY = {"train": 3, "val": 2}


@pytest.fixture
def served(tmp_path):
    "The tiny archive, in a folder of its own that a test serves."
    return make_davis_archive(tmp_path / "served" / NAME, train=3, val=2, frames=3)


def entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def assert_nothing_unpacked(root: Path):
    assert not (root / "DAVIS").exists(), entries(root)
    assert not any(p.name.startswith(UNPACK_PREFIX) for p in root.iterdir()), entries(root)


def test_module_imports_without_torch_or_pil():
    code = "import sys, dense_ulearn.download; print(sorted(m for m in ('torch', 'PIL', 'numpy') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


# (1) resume
def test_resumes_a_partial_download_with_a_range_request(served, tmp_path):
    root, data = tmp_path / "data", served.read_bytes()
    half = len(data) // 2
    root.mkdir()
    (root / f"{NAME}.part").write_bytes(data[:half])
    logs = []
    with local_file_server(served.parent) as server:
        davis = download_davis2017(root, server.url(NAME), TINY, progress=False, log=logs.append, keep_archive=True)
    assert server.requests == [(f"/{NAME}", f"bytes={half}-", 206)]  # one request, for the second half only
    assert (root / NAME).read_bytes() == data                        # byte-identical
    assert entries(root) == ["DAVIS", NAME]                          # no .part, no temporary folder
    assert davis == root / "DAVIS"
    assert check_davis_layout(davis, TINY) == {"train": ["train0", "train1", "train2"], "val": ["val0", "val1"]}
    assert any(line.startswith(f"resuming {server.url(NAME)} from {half} bytes of {len(data)} bytes") for line in logs), logs


def test_an_interrupted_download_is_resumed_by_the_next_run(served, tmp_path):
    root, data = tmp_path / "data", served.read_bytes()
    with local_file_server(served.parent, send_at_most=1000) as broken:
        with pytest.raises(DownloadError, match="run the same command again to resume"):
            download_davis2017(root, broken.url(NAME), TINY, progress=False, log=None)
    assert (root / f"{NAME}.part").stat().st_size == 1000
    with local_file_server(served.parent) as server:
        download_davis2017(root, server.url(NAME), TINY, progress=False, log=None)
    assert server.requests == [(f"/{NAME}", "bytes=1000-", 206)]
    assert entries(root) == ["DAVIS"]  # the archive is removed after the install


def test_a_server_without_ranges_starts_over(served, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / f"{NAME}.part").write_bytes(b"not the start of the archive" * 10)
    with local_file_server(served.parent, ranges=False) as server:
        download_davis2017(root, server.url(NAME), TINY, progress=False, log=None, keep_archive=True)
    assert server.requests == [(f"/{NAME}", "bytes=280-", 200)]
    assert (root / NAME).read_bytes() == served.read_bytes()


# (2) wrong size
def test_a_short_download_is_an_error_and_nothing_is_unpacked(served, tmp_path):
    root, size = tmp_path / "data", served.stat().st_size
    with local_file_server(served.parent, send_at_most=size - 100) as server:  # announces `size`, sends fewer bytes
        with pytest.raises(DownloadError) as err:
            download_davis2017(root, server.url(NAME), TINY, progress=False, log=None)
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, OSError)
    assert server.url(NAME) in msg and f"ended after {size - 100} of {size} bytes" in msg, msg
    assert "run the same command again to resume" in msg, msg
    assert_nothing_unpacked(root)
    assert entries(root) == [f"{NAME}.part"]  # kept for the next run; never renamed to .zip
    assert (root / f"{NAME}.part").stat().st_size == size - 100


def test_an_unreachable_server_names_the_url_and_the_retry(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{NAME}"
    with pytest.raises(DownloadError, match=re.escape(url) + ".*run the same command again"):
        download_davis2017(tmp_path / "data", url, TINY, progress=False, log=None)
    assert_nothing_unpacked(tmp_path / "data")


# (3) layout check
@pytest.mark.parametrize("drop, expected, problem", [
    ("DAVIS/Annotations/480p/val1/00000.png", TINY,
     "val sequence 'val1' has no first-frame mask Annotations/480p/val1/00000.png"),
    ("DAVIS/JPEGImages/480p/train1/00001.jpg", TINY,
     "train sequence 'train1' has a gap in its frames: JPEGImages/480p/train1/00001.jpg is missing but 00002.jpg is there"),
    (None, {"train": 60, "val": 30}, "train.txt lists 3 sequences, expected 60"),
])
def test_a_layout_failure_names_what_is_missing_and_installs_nothing(tmp_path, drop, expected, problem):
    archive = make_davis_archive(tmp_path / "served" / NAME, drop=[drop] if drop else [])
    root = tmp_path / "data"
    with local_file_server(archive.parent) as server:
        with pytest.raises(DavisLayoutError) as err:
            download_davis2017(root, server.url(NAME), expected, progress=False, log=None)
    msg = str(err.value)
    assert problem in msg and "nothing was installed" in msg and "\n" not in msg, msg
    assert isinstance(err.value, ValueError)
    assert_nothing_unpacked(root)
    assert entries(root) == [NAME]  # the downloaded archive stays; nothing was moved into place


# (4) success, found by `dense-ulearn info`
def test_an_install_is_found_by_info(served, tmp_path):
    root, logs = tmp_path / "data", []
    with local_file_server(served.parent) as server:
        davis = download_davis2017(root, server.url(NAME), TINY, progress=False, log=logs.append)
    assert logs[0].startswith("DAVIS-2017 licence:") and "BY-NC 4.0" in logs[0] and "Pont-Tuset" in logs[0], logs
    assert "YouTube" in logs[0], logs
    assert logs[-1].startswith(f"DAVIS-2017 (3 train + 2 val sequences) is in {davis}"), logs
    assert "dense-ulearn info" in logs[-1] and "dense-ulearn demo" in logs[-1], logs
    env = {**os.environ, "DENSE_ULEARN_DATA": str(root)}
    res = subprocess.run([sys.executable, "-m", "dense_ulearn.cli", "info"], capture_output=True, text=True,
                         timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert re.search(rf"davis: {re.escape(str(davis))} \(davis, 2 sequences\) \[found by: \$DENSE_ULEARN_DATA\]",
                     res.stdout), res.stdout
    assert re.search(rf"video: {re.escape(str(davis))} \(davis, 3 sequences\)", res.stdout), res.stdout
    # a second run finds the install: no request (the URL is not even reachable), nothing changes
    before = entries(davis)
    logs = []
    assert download_davis2017(root, "http://127.0.0.1:9/unreachable.zip", TINY, log=logs.append) == davis
    assert logs[0] == f"DAVIS-2017 is already installed in {davis}: nothing to download", logs
    assert entries(davis) == before


# (5) an existing non-DAVIS folder
def test_an_existing_folder_that_is_not_davis_is_refused_and_untouched(served, tmp_path):
    root = tmp_path / "data"
    (root / "DAVIS" / "JPEGImages").mkdir(parents=True)
    (root / "DAVIS" / "my-notes.txt").write_text("mine")
    with local_file_server(served.parent) as server:
        with pytest.raises(FileExistsError) as err:
            download_davis2017(root, server.url(NAME), TINY, progress=False, log=None)
    msg = str(err.value)
    assert f"{root / 'DAVIS'} exists but is not a complete DAVIS-2017 install" in msg and "\n" not in msg, msg
    assert "the split file ImageSets/2017/train.txt is missing" in msg and "left as it is" in msg, msg
    assert server.requests == []                       # nothing downloaded
    assert entries(root) == ["DAVIS"]                  # no .part, no archive, no temporary folder
    assert entries(root / "DAVIS") == ["JPEGImages", "my-notes.txt"]
    assert (root / "DAVIS" / "my-notes.txt").read_text() == "mine"


def test_a_file_where_davis_goes_is_refused(tmp_path):
    (tmp_path / "DAVIS").write_text("a file")
    with pytest.raises(FileExistsError, match="it is not a folder"):
        download_davis2017(tmp_path, "http://127.0.0.1:9/x.zip", TINY, log=None)
    assert (tmp_path / "DAVIS").read_text() == "a file"
