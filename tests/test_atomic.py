"""Atomic files and folders: whole or absent, never a leftover temporary."""

import json
import os
import threading

import pytest

from avfbp_jax import atomic


def test_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    atomic.write_json(path, {"x": 1})
    atomic.write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert os.listdir(tmp_path) == ["a.json"]
    assert path.stat().st_mode & 0o777 == atomic.FILE_MODE  # as open() would make it, not 0600


def test_failed_write_keeps_old_file_and_removes_temporary(tmp_path):
    path = tmp_path / "a.txt"
    atomic.write_text(path, "old")

    def fail(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.write(path, fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_concurrent_writers_never_share_a_temporary(tmp_path):
    path = tmp_path / "same.bin"
    errors = []

    def writer(i):
        try:
            for _ in range(50):
                atomic.write_bytes(path, bytes([i]) * 10_000)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    data = path.read_bytes()
    assert len(data) == 10_000 and len(set(data)) == 1  # one writer's whole content
    assert os.listdir(tmp_path) == ["same.bin"]


def test_directory_appears_whole_and_replaces_an_old_one(tmp_path):
    out = tmp_path / "bundle"
    with atomic.directory(out) as tmp:
        (open(os.path.join(tmp, "f"), "w")).close()
        assert not out.exists()
    assert os.listdir(out) == ["f"]
    with atomic.directory(out) as tmp:
        open(os.path.join(tmp, "g"), "w").close()
    assert os.listdir(out) == ["g"]
    assert os.listdir(tmp_path) == ["bundle"]


def test_failed_directory_keeps_the_old_one(tmp_path):
    out = tmp_path / "bundle"
    with atomic.directory(out) as tmp:
        open(os.path.join(tmp, "f"), "w").close()
    with pytest.raises(RuntimeError):
        with atomic.directory(out) as tmp:
            open(os.path.join(tmp, "g"), "w").close()
            raise RuntimeError("stop")
    assert os.listdir(out) == ["f"]
    assert os.listdir(tmp_path) == ["bundle"]
