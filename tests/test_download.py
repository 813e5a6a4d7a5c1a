"""download_emnist against a small zip served on 127.0.0.1 by the test itself."""

from __future__ import annotations

import functools
import hashlib
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from annlib.data import EmnistFileError, download_emnist, read_labels, read_mapping

LABELS = "emnist-mnist-test-labels-idx1-ubyte.gz"
MAPPING = "emnist-mnist-mapping.txt"


class QuietHandler(SimpleHTTPRequestHandler):
    """Serve files from a folder without logging each request to stderr."""

    def log_message(self, format, *args):  # noqa: A002 - the signature is http.server's
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve tmp_path/served over HTTP on a free local port; yield (folder, base url)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def make_zip(path: Path, members: dict[str, bytes]) -> str:
    """Write a zip holding the members (in order) and return its md5."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return hashlib.md5(path.read_bytes()).hexdigest()


def corrupted(data: bytes) -> bytes:
    """Return the bytes with one byte flipped in the middle."""
    out = bytearray(data)
    out[len(out) // 2] ^= 0xFF
    return bytes(out)


@pytest.fixture
def originals(emnist_file) -> dict[str, bytes]:
    """The official EMNIST-MNIST test labels and mapping, as bytes."""
    return {name: emnist_file(name).read_bytes() for name in (LABELS, MAPPING)}


@pytest.mark.parametrize("check_md5", [True, False])
def test_download_extracts_verified_files(server, originals, tmp_path, check_md5):
    folder, url = server
    md5 = make_zip(
        folder / "gzip.zip",
        {
            f"gzip/{LABELS}": originals[LABELS],
            f"gzip/{MAPPING}": originals[MAPPING],
            "gzip/emnist-letters-mapping.txt": b"not wanted",
        },
    )
    root = tmp_path / "emnist"

    out = download_emnist(
        root, url=f"{url}/gzip.zip", md5=md5 if check_md5 else None, splits=("mnist",)
    )

    assert out == root
    assert sorted(p.name for p in root.iterdir()) == sorted([LABELS, MAPPING])
    assert (root / LABELS).read_bytes() == originals[LABELS]
    assert len(read_labels("mnist", "test", root)) == 10_000
    assert read_mapping("mnist", root) == list("0123456789")


def test_corrupt_member_is_rejected_and_not_kept(server, originals, tmp_path):
    folder, url = server
    make_zip(folder / "gzip.zip", {f"gzip/{LABELS}": corrupted(originals[LABELS])})
    root = tmp_path / "emnist"

    with pytest.raises(EmnistFileError, match="sha256"):
        download_emnist(root, url=f"{url}/gzip.zip", md5=None, splits=("mnist",))

    assert list(root.iterdir()) == []


def test_corrupt_member_leaves_no_earlier_member_behind(server, originals, tmp_path):
    folder, url = server
    make_zip(
        folder / "gzip.zip",
        {f"gzip/{MAPPING}": originals[MAPPING], f"gzip/{LABELS}": corrupted(originals[LABELS])},
    )
    root = tmp_path / "emnist"

    with pytest.raises(EmnistFileError, match="sha256"):
        download_emnist(root, url=f"{url}/gzip.zip", md5=None, splits=("mnist",))

    assert list(root.iterdir()) == []


def test_wrong_md5_raises_and_leaves_nothing(server, originals, tmp_path):
    folder, url = server
    make_zip(folder / "gzip.zip", {f"gzip/{LABELS}": originals[LABELS]})
    root = tmp_path / "emnist"

    with pytest.raises(RuntimeError, match="corrupted"):
        download_emnist(root, url=f"{url}/gzip.zip", md5="0" * 32, splits=("mnist",))

    assert list(root.iterdir()) == []


def test_not_a_zip_is_an_emnist_error(server, tmp_path):
    folder, url = server
    (folder / "gzip.zip").write_bytes(b"<html>maintenance</html>")
    root = tmp_path / "emnist"

    with pytest.raises(EmnistFileError, match="zip"):
        download_emnist(root, url=f"{url}/gzip.zip", md5=None, splits=("mnist",))

    assert list(root.iterdir()) == []
