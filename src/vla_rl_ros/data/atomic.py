"""Crash-safe file writes: write a temporary sibling, fsync it, `os.replace` it onto the final name,
fsync the directory. A reader (or a crash) therefore sees either the old file or the complete new
one, never a torn one (POSIX rename atomicity; the directory fsync makes the rename durable).

Standard library only: rl/ writes its journal, metrics and checkpoints through here, and importing
the learner must not import pyarrow or the video stack (the parquet side is data/files.py)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

# Temporary files carry this marker, so that an interrupted write is recognised and removed later.
TMP_MARKER = ".tmp-"


class DatasetError(RuntimeError):
    """A dataset file cannot be read or written; the message names the file and the likely fix."""


class SchemaError(ValueError):
    """The dataset root holds episodes of another shape (cameras, image sizes, fps, state, actions) than
    what is to go into it: the settings are wrong for it, not the files."""


def tmp_path_for(path: Path) -> Path:
    """Temporary sibling of `path` (same directory, so `os.replace` stays on one file system)."""
    return path.with_name(f"{path.name}{TMP_MARKER}{os.getpid()}")


def is_tmp(path: Path) -> bool:
    return TMP_MARKER in path.name


def writer_gone(tmp: Path) -> bool:
    """Whether the process that wrote the temporary `tmp` (its pid ends the name) is gone, so that
    `tmp` is a leftover of a kill: no process has that pid, or this process has it (call this before
    writing anything: a restarted process in a container may get its predecessor's pid back). A pid
    that an unrelated process has taken since keeps the temporary until a later start."""
    pid = tmp.name.rpartition(TMP_MARKER)[2]
    if not pid.isdigit() or int(pid) == 0:
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process
        return False
    return False


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX needs the directory entry itself flushed)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _explain(exc: OSError, path: Path) -> DatasetError:
    """Turn an OSError into a DatasetError that names the path and says what to do."""
    if exc.errno == errno.ENOSPC:
        hint = "the disk is full; free space or record to another root, nothing already written was changed"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "no write permission; fix the permissions or choose a writable dataset root"
    else:
        hint = exc.strerror or type(exc).__name__
    return DatasetError(f"cannot write {path}: {hint}")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync it and atomically move it onto `path`.

    On any error the temporary file is removed and `path` is left as it was; OSErrors become a
    DatasetError naming `path`."""
    tmp = tmp_path_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _explain(exc, path) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def move_into_place(src: Path, path: Path) -> None:
    """Atomically move an already written, fsynced file `src` (same file system) onto `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise _explain(exc, path) from exc


def write_json(path: Path, data: object) -> None:
    with writing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n")
