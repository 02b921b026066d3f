"""Atomic writes: a file via a temporary file and ``os.replace``; a folder of several files via a
temporary folder swapped in whole.  Temporary files and folders that a killed process left behind
are removed by the next write to the same place (one writer per file or folder is assumed).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    The temporary file lives in the target's directory (``os.replace`` is only atomic within one
    file system) and is removed again if anything fails.  An existing file keeps its mode; a
    symlink keeps pointing where it did (its target is replaced, not the link).
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if not path.parent.is_dir():
        raise ValueError(f"path: directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"path: {str(path)!r} is a directory")
    _remove_stale(path.parent.glob(f".{_glob_escape(path.name)}.*.tmp"))
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except PermissionError:  # name the target, not the temporary file
        raise PermissionError(f"path: cannot write {str(path)!r} (permission denied in "
                              f"{str(path.parent)!r})") from None
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would have.
        os.chmod(tmp, _default_mode(path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _default_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON (and a final newline), written atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, keep_others: bool = True) -> Iterator[Path]:
    """Write a folder as one unit: yields an empty temporary folder next to ``target``; when the
    block ends without an error it replaces ``target`` whole (readers see the old folder or the
    new one), else it is removed and ``target`` is untouched.

    With ``keep_others``, files of the old folder that the block did not write are carried over
    (hard links where possible).  On Linux the swap is one ``renameat2(RENAME_EXCHANGE)``;
    elsewhere two renames, and a folder left aside by a crash between them is put back by the
    next call (see :func:`recover_folder`).
    """
    target = Path(target)
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise ValueError(f"path: {str(target)!r} exists and is not a folder")
    recover_folder(target)
    _remove_stale(target.parent.glob(f".{_glob_escape(target.name)}.tmp-*"))
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except PermissionError:  # name the target, not the temporary folder
        raise PermissionError(f"path: cannot write {str(target)!r} (permission denied in "
                              f"{str(target.parent)!r})") from None
    try:
        yield tmp
        if keep_others and target.is_dir():
            for old in target.iterdir():
                if old.is_file() and not old.name.startswith(".") \
                        and not (tmp / old.name).exists():
                    _link_or_copy(old, tmp / old.name)
        os.chmod(tmp, _default_mode(target) | 0o111 if not target.exists()
                 else target.stat().st_mode & 0o777)
        for written in tmp.iterdir():
            _fsync(written)
        _fsync(tmp)
        _swap(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def readable_folder(target: str | os.PathLike) -> Path:
    """Where a reader finds ``target``'s data: ``target``, or -- only when a crash mid-swap left
    it aside (possible without ``RENAME_EXCHANGE``) -- the ``.<name>.old-*`` folder.  Moves
    nothing, so a reader never disturbs a writer."""
    target = Path(target)
    if target.exists():
        return target
    aside = sorted(target.parent.glob(f".{_glob_escape(target.name)}.old-*"),
                   key=lambda p: p.stat().st_mtime)
    return aside[-1] if aside else target


def recover_folder(target: str | os.PathLike) -> None:
    """Put back a folder that a crash left aside mid-swap (only possible without
    ``RENAME_EXCHANGE``): ``target`` missing and ``.<name>.old-*`` present."""
    target = Path(target)
    if target.exists():
        return
    aside = sorted(target.parent.glob(f".{_glob_escape(target.name)}.old-*"))
    if aside:
        os.replace(aside[-1], target)


def _swap(tmp: Path, target: Path) -> None:
    """Afterwards ``target`` holds what ``tmp`` held; ``tmp`` holds the old folder or is gone."""
    if not target.exists():
        os.replace(tmp, target)
    elif not _exchange(tmp, target):
        aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
        os.replace(target, aside)
        os.replace(tmp, target)
        shutil.rmtree(aside, ignore_errors=True)
    _fsync(target.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux ``renameat2(RENAME_EXCHANGE)``; False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def _fsync(path: Path) -> None:
    """fsync a file or a folder (a folder's entries are data too); best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale(paths: Iterator[Path]) -> None:
    for stale in paths:
        with contextlib.suppress(OSError):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
