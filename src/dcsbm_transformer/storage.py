"""Crash-safe file writing and deterministic array files.

Every file the pipeline writes goes through ``atomic_write``: the bytes go to a temporary file
in the same folder, are flushed and fsynced, and only then renamed over the target. A run
killed mid-write therefore leaves either the old file or the new one, never half a file, plus
at most a stray temporary that ``remove_stale_temporaries`` clears on the next run.

``write_npz`` writes ``.npz`` archives byte-for-byte reproducibly (numpy's own ``savez`` stamps
the current time into the zip headers), so the same config gives identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydantic import BaseModel, ValidationError

TEMP_MARKER = ".tmp-"
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object], before_commit: Callable[[Path], None] | None = None) -> Path:
    """Write ``path`` through ``write(file)`` (its return value is ignored) so that readers see the
    old or the new file, never a mix.

    On any error (a full disk raises OSError) the temporary is removed, the previous file is
    untouched and the error propagates. ``before_commit(path)`` runs when the temporary is
    complete but not yet renamed (tests pause or fail the write there).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path_for(path)
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if before_commit is not None:
            before_commit(path)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def write_once(path: str | Path, data: bytes, mode: int = 0o444) -> bool:
    """Create ``path`` with ``data`` only if it does not exist (exclusive create, fsynced, read-only
    by default); returns False, writing nothing, when it already exists. For files that must never
    be replaced (a run's pre-registration)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_directory(path.parent)
    return True


def atomic_write_bytes(path: str | Path, data: bytes, before_commit: Callable[[Path], None] | None = None) -> Path:
    return atomic_write(path, lambda handle: handle.write(data), before_commit)


def atomic_write_json(path: str | Path, payload: Any) -> Path:
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode())


def atomic_write_validated(path: str | Path, schema: type[BaseModel], payload: Any) -> Path:
    """Validate ``payload`` against a pydantic ``schema``, then write it as JSON atomically; an
    invalid payload raises ValueError naming the file and writes nothing."""
    try:
        validated = schema.model_validate(payload)
    except ValidationError as error:
        raise ValueError(f"refusing to write an invalid {Path(path).name}: {error}") from None
    return atomic_write_json(path, validated.model_dump(mode="json"))


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete temporaries left by a killed writer (any process). Call only when no other writer
    can be active in ``directory`` (the run lock guarantees this for a results folder)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir() if p.is_file() and p.name.startswith(".") and TEMP_MARKER in p.name]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _write_npz_to(handle: IO[bytes], arrays: Mapping[str, np.ndarray]) -> None:
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_TIME)
            info.external_attr = 0o644 << 16
            with archive.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arrays[name]), allow_pickle=False)


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Atomically write a reproducible, uncompressed .npz (loadable with ``np.load``)."""
    return atomic_write(path, lambda handle: _write_npz_to(handle, arrays))


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of an .npz written by ``write_npz`` (no pickles allowed)."""
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


class JsonSyntaxError(ValueError):
    """A file that is not valid JSON; ``problem`` says where, in the ``(file): ...`` form of config errors."""

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(problem)


def read_json_document(path: str | Path, what: str, example: str) -> tuple[Any, str]:
    """(parsed JSON, text) of a user's input file. FileNotFoundError for a missing file or a
    folder (naming ``what`` and an ``example`` of the right thing); JsonSyntaxError for bad JSON."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a directory, not a {what} (pass a JSON file such as {example})")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    text = path.read_text()
    try:
        return json.loads(text), text
    except json.JSONDecodeError as error:
        raise JsonSyntaxError(f"(file): not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}") from None
