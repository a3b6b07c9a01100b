import numpy as np
import pytest

from harness.datasets.formats import VecsFormatError, read_ann_hdf5, read_vecs, write_vecs


@pytest.mark.parametrize(
    ("suffix", "dtype"), [(".fvecs", np.float32), (".ivecs", np.int32), (".bvecs", np.uint8)]
)
def test_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(1)
    a = (rng.random((37, 13)) * 200).astype(dtype)
    p = tmp_path / f"x{suffix}"
    write_vecs(p, a)
    assert p.stat().st_size == 37 * (4 + 13 * np.dtype(dtype).itemsize)
    back = read_vecs(p)
    assert back.dtype == np.dtype(dtype).newbyteorder("<") or back.dtype == dtype
    np.testing.assert_array_equal(back, a)
    np.testing.assert_array_equal(read_vecs(p, mmap=False), a)


def test_header_layout_matches_texmex(tmp_path):
    p = tmp_path / "a.fvecs"
    write_vecs(p, np.array([[1.5, 2.0]], dtype=np.float32))
    raw = p.read_bytes()
    assert raw[:4] == (2).to_bytes(4, "little")
    assert np.frombuffer(raw[4:], "<f4").tolist() == [1.5, 2.0]


def test_truncated_file_names_file_and_offset(tmp_path):
    p = tmp_path / "t.fvecs"
    write_vecs(p, np.ones((5, 8), dtype=np.float32))
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(VecsFormatError) as e:
        read_vecs(p)
    record = 4 + 8 * 4
    assert str(p) in str(e.value)
    assert e.value.offset == 4 * record
    assert f"offset {4 * record}" in str(e.value)


def test_wrong_dimension_header_names_record(tmp_path):
    p = tmp_path / "w.ivecs"
    write_vecs(p, np.arange(40, dtype=np.int32).reshape(10, 4))
    raw = bytearray(p.read_bytes())
    record = 4 + 4 * 4
    raw[3 * record : 3 * record + 4] = (5).to_bytes(4, "little")
    p.write_bytes(bytes(raw))
    with pytest.raises(VecsFormatError, match=r"offset 60: record 3 has dimension header 5, expected 4"):
        read_vecs(p)


def test_garbage_dimension_header(tmp_path):
    p = tmp_path / "g.fvecs"
    p.write_bytes((-3).to_bytes(4, "little", signed=True) + b"\0" * 12)
    with pytest.raises(VecsFormatError, match="offset 0: invalid dimension header -3"):
        read_vecs(p)


def test_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="unknown vector format"):
        write_vecs(tmp_path / "x.npy", np.zeros((1, 1)))


def test_hdf5_read(tmp_path):
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "small-euclidean.hdf5"
    rng = np.random.default_rng(0)
    with h5py.File(p, "w") as f:
        f.attrs["distance"] = "euclidean"
        f["train"] = rng.random((100, 8), dtype=np.float32)
        f["test"] = rng.random((5, 8), dtype=np.float32)
        f["neighbors"] = np.tile(np.arange(10, dtype=np.int32), (5, 1))
        f["distances"] = np.zeros((5, 10), dtype=np.float32)
    data = read_ann_hdf5(p)
    assert data.train.shape == (100, 8) and data.test.shape == (5, 8)
    assert data.neighbors.shape == (5, 10) and data.distances is not None
    assert data.distance_metric == "euclidean"


def test_hdf5_missing_dataset(tmp_path):
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "bad.hdf5"
    with h5py.File(p, "w") as f:
        f["train"] = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"missing datasets \['test', 'neighbors'\]"):
        read_ann_hdf5(p)
