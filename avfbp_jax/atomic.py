"""Atomic writes: every file and folder the package leaves behind appears whole or not at all.

A file is written under a unique temporary name (mkstemp, so two writers never collide) in the
same folder, then renamed over its target; a folder is built as a unique temporary sibling and
renamed into place, an existing one moved aside first and removed after. A write that fails or is
interrupted removes its temporary and leaves the old target (or none) in place.
"""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

TMP_PREFIX = ".tmp-"
# mkstemp creates files readable by their owner only; a finished file gets the mode a plain
# open() would give it (0o666 less the process's umask, read once here).
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def write(path: str | os.PathLike, write_to: Callable[[IO[bytes]], Any],
          tmp_dir: str | os.PathLike | None = None) -> None:
    """Calls write_to(binary_file) on a temporary file, then renames it to path.

    tmp_dir holds the temporary (by default path's folder; it must be on the same filesystem).
    """
    path = os.fspath(path)
    folder = os.fspath(tmp_dir) if tmp_dir else os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write_to(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes,
                tmp_dir: str | os.PathLike | None = None) -> None:
    """Writes bytes to path atomically."""
    write(path, lambda f: f.write(data), tmp_dir=tmp_dir)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 text to path atomically."""
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any, indent: int = 1, **kwargs: Any) -> None:
    """Writes obj as JSON (ending in a newline) to path atomically."""
    write_text(path, json.dumps(obj, indent=indent, **kwargs) + "\n")


@contextlib.contextmanager
def directory(path: str | os.PathLike, mode: int = 0o755) -> Iterator[str]:
    """Yields an empty temporary folder beside path; renames it to path when the block succeeds.

    An existing path is replaced: moved aside, the new folder renamed in, the old one removed (if
    the rename fails the old folder is put back). On an error the temporary folder is removed.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=parent)
    os.chmod(tmp, mode)  # mkdtemp makes it private; what we write is not secret
    old = None
    try:
        yield tmp
        if os.path.lexists(path):
            old = tempfile.mkdtemp(prefix=TMP_PREFIX + "old-", dir=parent)
            os.replace(path, os.path.join(old, "previous"))
        try:
            os.replace(tmp, path)
        except OSError:
            if old is not None:
                os.replace(os.path.join(old, "previous"), path)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
