"""Atomic file writes (temporary file in the same folder + `os.replace`) and strict JSON.

A crash or kill never leaves a half-written file in place: readers see the old file or the new one. A write
that fails (full disk, no permission) raises `StorageError` naming the file, and removes its temporary file.
Temporaries are named `.<name>.<random><suffix>` (`suffix` ".tmp" unless the writer needs an extension);
`stale_temporaries` finds those a killed process left behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from actionbert.errors import StorageError

#: Free bytes below which a failed write is reported as a full disk (torch.save does not pass ENOSPC on).
LOW_SPACE_BYTES = 1 << 20


def atomic_write(path: str | Path, write: Callable[[str], Any], *, suffix: str = ".tmp") -> Path:
    """Call `write(tmp_path)` then rename into place, so a crash never leaves a half-written file.

    `suffix` ends the temporary name (some writers insist on an extension, e.g. `.pt2`). The file gets the
    usual permissions (0666 minus the umask), not mkstemp's owner-only 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        Path(tmp).unlink(missing_ok=True)
        storage = storage_error(path, e)
        if storage is None or storage is e:
            raise
        raise storage from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def storage_error(path: Path, error: BaseException) -> StorageError | None:
    """A `StorageError` naming `path` when `error` is a failed write (full disk, quota, permission, I/O);
    None when it is something else (then it is a bug to show as it is)."""
    if isinstance(error, StorageError):
        return error
    code = getattr(error, "errno", None)
    free = _free_bytes(path.parent)
    if code in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < LOW_SPACE_BYTES):
        left = f" ({free:,} bytes free)" if free is not None else ""
        return _with_errno(StorageError(f"{path}: cannot write: no space left on device{left}; free some space or "
                                        "choose another folder"), errno.ENOSPC)
    if isinstance(error, OSError) and code is not None:
        return _with_errno(StorageError(f"{path}: cannot write: {error.strerror or error}"), code)
    return None


def _with_errno(error: StorageError, code: int) -> StorageError:
    error.errno = code
    return error


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def to_json(obj: Any) -> str:
    """Strict JSON (indent 2): NaN and infinity are refused rather than written as invalid `NaN` tokens;
    callers put None (null) where a number is undefined."""
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def stale_temporaries(folder: str | Path, names: list[str]) -> list[Path]:
    """Temporary files that killed `atomic_write` calls for `names` left in `folder`."""
    folder = Path(folder)
    found: list[Path] = []
    for name in names:
        found.extend(p for p in folder.glob(f".{name}.*") if p.is_file() and p.name.endswith(".tmp"))
    return sorted(found)
