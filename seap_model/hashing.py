"""Content hashes of files and folders (sha256): what decides that an input, a model or an output is the same."""

from __future__ import annotations

import hashlib
from pathlib import Path

IGNORED = {"__pycache__"}


def file_digest(path: str | Path) -> str:
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def path_digest(path: str | Path) -> str | None:
    """Content hash of a file, or of a folder (every file's relative path and content); None if missing."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file() and not IGNORED & set(q.relative_to(path).parts)):
        h.update(p.relative_to(path).as_posix().encode() + b"\0" + file_digest(p).encode() + b"\0")
    return h.hexdigest()
