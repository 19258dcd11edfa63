import pytest

from charfast.atomic import atomic_write


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    with atomic_write(path) as f:
        f.write(b"first")
    with atomic_write(path) as f:
        f.write(b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]  # no temp file left


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
