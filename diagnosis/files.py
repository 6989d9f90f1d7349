"""Durable, private whole-file writes, shared by the API (labels, mirrored models) and the
pipeline (the deployment pointer, refused exports): a reader sees the old content or the new,
never a part.

Files hold patient data (exports, labels, tables) or secrets, so they are created private: the
file 0600, and folders this module creates 0700 (:func:`private_dir`). Processes that write many
files through other libraries (the pipeline's IO manager, MLflow) set :func:`private_umask`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
PRIVATE_UMASK = 0o077


def private_umask() -> int:
    """Make every file and folder this process creates from now on owner-only; the old mask."""
    return os.umask(PRIVATE_UMASK)


def private_dir(directory: Path) -> Path:
    """Create ``directory`` (and missing parents) owner-only (0700); an existing folder keeps its
    mode unless it is the one asked for and group/other can enter it, then it is made 0700."""
    missing = []
    current = Path(directory)
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:  # created by a concurrent writer
            pass
        folder.chmod(PRIVATE_DIR)
    if not missing and directory.is_dir() and directory.stat().st_mode & 0o077:
        try:
            directory.chmod(PRIVATE_DIR)
        except PermissionError:  # not ours (a shared mount): leave it
            pass
    return directory


def make_private(root: Path) -> int:
    """Take group/other permissions off ``root`` and everything below it (folders 0700, files
    0600): state written before files were created private, or copied in with another mask. The
    number of entries changed; entries owned by another user are left alone."""
    if not root.exists():
        return 0
    changed = 0
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        try:
            mode = path.stat().st_mode
            if mode & 0o077:
                path.chmod(PRIVATE_DIR if path.is_dir() else mode & 0o700)
                changed += 1
        except (PermissionError, FileNotFoundError):
            continue
    return changed


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary file beside ``path`` (readers skip names starting with
    a dot), flush and ``fsync`` it, rename it over ``path`` and ``fsync`` the directory. A failure
    leaves no partial file behind. The file is 0600 (``mkstemp``'s mode, kept by the rename);
    folders created on the way are 0700."""
    if not path.parent.is_dir():
        private_dir(path.parent)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), PRIVATE_FILE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def move_private(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` (same file system: one rename), the file made 0600 and the
    target folder 0700; the directory entries are made durable."""
    private_dir(target.parent)
    os.chmod(source, PRIVATE_FILE)
    os.replace(source, target)
    fsync_directory(target.parent)
    fsync_directory(source.parent)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks (hex)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
