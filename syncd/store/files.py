"""The SQLite state file and its side files: owner-only, and usable, or one clear error.

SQLite keeps a database's state in up to three more files beside it (``-wal`` and ``-shm`` in
WAL mode, ``-journal`` otherwise), created with the database file's permissions. A side file
left behind by another user (a run as root, a read-only mount) makes every later open fail
with an opaque "attempt to write a readonly database": we name the file and the fix instead.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy.engine import make_url

from syncd.errors import StateFileError

__all__ = ["SIDE_SUFFIXES", "prepare_sqlite_file", "sqlite_path"]

SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
_RW = os.R_OK | os.W_OK


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL; None for memory databases and URI filenames."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def prepare_sqlite_file(url: str, *, check_side_files: bool = True) -> None:
    """Create the state file owner-only (0600) before SQLite would create it 0644 and, at
    start (``check_side_files``), check it, its side files and its directory are usable."""
    path = sqlite_path(url)
    if path is None:
        return
    if not check_side_files:
        if not path.exists():  # deleted while we run: the next connection recreates it
            _create_private(path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(path.parent, _RW | os.X_OK):
        raise StateFileError(
            f"the state directory {path.parent} is not writable by this user (uid "
            f"{os.getuid()}); SQLite must create its -wal and -shm files there. Fix: give "
            f"this user write access to {path.parent}, or point database_url elsewhere"
        )
    if not path.exists():
        _create_private(path)
    elif not os.access(path, _RW):
        raise StateFileError(
            f"the state file {path} is not readable and writable by this user (uid "
            f"{os.getuid()}). Fix: chown it to this user and chmod 600 {path}"
        )
    else:
        # Readable and writable but owned by someone else: leave its mode alone.
        with contextlib.suppress(PermissionError):
            os.chmod(path, 0o600)
    for suffix in SIDE_SUFFIXES:
        side = path.with_name(path.name + suffix)
        if side.exists() and not os.access(side, _RW):
            raise StateFileError(
                f"SQLite's side file {side} is not readable and writable by this user (uid "
                f"{os.getuid()}), so the state store cannot be opened. Fix: with syncd "
                f"stopped, chown it to this user (chmod 600 {side}), or remove it if no "
                f"other process has the database open"
            )


def _create_private(path: Path) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)  # whatever the umask
