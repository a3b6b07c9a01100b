"""The SIFT download and import paths, against a local HTTP server serving a small archive."""

import hashlib
import http.server
import io
import json
import tarfile
import threading

import numpy as np
import pytest

from harness.datasets.download import DownloadError, download
from harness.datasets.formats import write_vecs
from harness.datasets.generate import generate_sets
from harness.datasets.sources import fetch_sift
from harness.datasets.store import DatasetError, DatasetStore


class RangeServer(http.server.ThreadingHTTPServer):
    """Serves one payload at /sift.tar.gz, honouring ``Range: bytes=N-`` like a real mirror."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.ranges: list[str | None] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/sift.tar.gz"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        data = self.server.payload
        rng = self.headers.get("Range")
        self.server.ranges.append(rng)
        if self.path != "/sift.tar.gz":
            self.send_error(404)
            return
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def sift_files(tmp_path_factory):
    base, queries, learn = generate_sets(11, 3000, 50, 200, dim=128)
    folder = tmp_path_factory.mktemp("sift")
    write_vecs(folder / "sift_base.fvecs", base)
    write_vecs(folder / "sift_query.fvecs", queries)
    write_vecs(folder / "sift_learn.fvecs", learn)
    d = ((queries[:, None, :].astype(np.float64) - base[None]) ** 2).sum(-1)
    write_vecs(folder / "sift_groundtruth.ivecs", np.argsort(d, axis=1, kind="stable")[:, :100].astype(np.int32))
    return folder


def _archive(folder) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(folder.iterdir()):
            tar.add(p, arcname=f"sift/{p.name}")
    return buf.getvalue()


@pytest.fixture(scope="module")
def archive_bytes(sift_files):
    return _archive(sift_files)


@pytest.fixture
def server(archive_bytes):
    srv = RangeServer(archive_bytes)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


def test_fetch_downloads_checks_and_converts(tmp_path, server):
    store = DatasetStore(tmp_path / "data")
    md5 = hashlib.md5(server.payload).hexdigest()
    ds = fetch_sift(store, url=server.url, size=len(server.payload), md5=md5, dev_queries=100)
    m = ds.manifest
    assert (m.kind, m.n_base, m.n_queries, m.n_dev_queries) == ("sift-1m", 3000, 50, 100)
    assert m.source["dev_from"].startswith("sift_learn")
    assert m.source["published_gt_top10_agreement"] > 0.99
    assert ds.verify() == []
    # a second fetch reuses the dataset and downloads nothing
    n = len(server.ranges)
    fetch_sift(store, url=server.url, size=len(server.payload), md5=md5)
    assert len(server.ranges) == n


def test_half_downloaded_file_is_resumed(tmp_path, server):
    dest = tmp_path / "sift.tar.gz"
    half = len(server.payload) // 2
    (tmp_path / "sift.tar.gz.part").write_bytes(server.payload[:half])
    download(server.url, dest, size=len(server.payload), md5=hashlib.md5(server.payload).hexdigest())
    assert server.ranges == [f"bytes={half}-"]
    assert dest.read_bytes() == server.payload
    assert not (tmp_path / "sift.tar.gz.part").exists()


def test_checksum_mismatch_keeps_bad_file_aside(tmp_path, server):
    dest = tmp_path / "sift.tar.gz"
    with pytest.raises(DownloadError, match=r"MD5 [0-9a-f]{32}, expected 0{32}.*kept aside"):
        download(server.url, dest, size=len(server.payload), md5="0" * 32)
    assert not dest.exists()
    assert (tmp_path / "sift.tar.gz.bad").read_bytes() == server.payload


def test_size_mismatch(tmp_path, server):
    with pytest.raises(DownloadError, match="size"):
        download(server.url, tmp_path / "s.tgz", size=len(server.payload) + 1)


def test_from_unpacked_folder_and_archive(tmp_path, sift_files, archive_bytes):
    store = DatasetStore(tmp_path / "data")
    ds = fetch_sift(store, "from-folder", from_path=sift_files, dev_queries=100)
    assert ds.manifest.n_base == 3000
    arch = tmp_path / "sift.tar.gz"
    arch.write_bytes(archive_bytes)
    ds2 = fetch_sift(store, "from-archive", from_path=arch, dev_queries=100)
    np.testing.assert_array_equal(ds.groundtruth()[0], ds2.groundtruth()[0])


def test_corrupt_archive(tmp_path):
    bad = tmp_path / "sift.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(DatasetError, match="corrupt or unreadable archive"):
        fetch_sift(DatasetStore(tmp_path / "data"), from_path=bad)


def test_from_kcores_folder_holds_out_dev_queries(tmp_path, sift_files):
    kc = tmp_path / "kcores-data"
    kc.mkdir()
    for n in ("sift_base.fvecs", "sift_query.fvecs"):
        (kc / n).write_bytes((sift_files / n).read_bytes())
    from harness.datasets.formats import read_vecs

    gt = read_vecs(sift_files / "sift_groundtruth.ivecs")
    (kc / "ground_truth.json").write_text(
        json.dumps([{"query_id": i, "neighbors": gt[i].tolist()} for i in range(gt.shape[0])])
    )
    ds = fetch_sift(DatasetStore(tmp_path / "data"), "kc", from_path=kc, dev_queries=10)
    assert ds.manifest.kind == "kcores"
    assert (ds.manifest.n_queries, ds.manifest.n_dev_queries) == (40, 10)
    assert ds.manifest.source["kcores_gt_top10_agreement"] > 0.99


def test_from_hdf5(tmp_path, sift_files):
    h5py = pytest.importorskip("h5py")
    from harness.datasets.formats import read_vecs

    p = tmp_path / "sift-128-euclidean.hdf5"
    with h5py.File(p, "w") as f:
        f.attrs["distance"] = "euclidean"
        f["train"] = np.asarray(read_vecs(sift_files / "sift_base.fvecs"))
        f["test"] = np.asarray(read_vecs(sift_files / "sift_query.fvecs"))
        f["neighbors"] = np.asarray(read_vecs(sift_files / "sift_groundtruth.ivecs"))
    ds = fetch_sift(DatasetStore(tmp_path / "data"), "h5", from_path=p, dev_queries=10)
    assert ds.manifest.kind == "ann-hdf5" and ds.manifest.n_queries == 40
    assert ds.manifest.source["published_gt_top10_agreement"] > 0.99


def test_missing_from_path(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        fetch_sift(DatasetStore(tmp_path), from_path=tmp_path / "nothing")
