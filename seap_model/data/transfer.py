"""Parallel, resumable, verified file transfer from a store into a folder.

Each file is written to ``<name>.part`` and renamed only once its size and checksum (where known)
are right, so a file under its real name is always complete. A rerun after a kill skips the files
that arrived and starts the others again. A failure is ``transient`` when the store did not deliver the file (a
network or server error on the last try), as opposed to a missing or corrupt file: a rerun may fetch it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from seap_model.data.stores import MissingFile, Store
from seap_model.progress import progress

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Wanted:
    """A file to fetch, with the checksum and size the manifest gives (if any)."""

    key: str
    sha256: str | None = None
    size: int | None = None


class TransferError(RuntimeError):
    """A transfer that failed its verification; the message names the file."""


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def is_complete(path: Path, wanted: Wanted) -> bool:
    """Whether ``path`` already holds the wanted file (files are only ever renamed into place verified)."""
    if not path.is_file():
        return False
    if wanted.size is not None and path.stat().st_size != wanted.size:
        return False
    return wanted.sha256 is None or sha256_of(path) == wanted.sha256


def fetch_one(store: Store, wanted: Wanted, dest: Path) -> int:
    """Fetch one file into ``dest`` (atomically, verified); returns its size in bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    try:
        with store.open(wanted.key) as remote, tmp.open("wb") as out:
            while chunk := remote.body.read(_CHUNK):
                sha.update(chunk)
                md5.update(chunk)
                out.write(chunk)
                size += len(chunk)
        problems = [
            f"{what}: expected {want}, got {got}"
            for what, want, got in [
                ("size", wanted.size, size),
                ("size", remote.size, size),
                ("sha256", wanted.sha256, sha.hexdigest()),
                ("md5 (ETag)", remote.md5, md5.hexdigest()),
            ]
            if want is not None and want != got
        ]
        if problems:
            raise TransferError(f"{wanted.key}: {problems[0]}")
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def _fetch_with_retries(store: Store, wanted: Wanted, dest: Path, retries: int) -> tuple[str, int, str, bool]:
    """('fetched', bytes, '', False) or ('failed', 0, reason, transient); a missing file is not retried."""
    for attempt in range(retries + 1):
        try:
            return "fetched", fetch_one(store, wanted, dest), "", False
        except MissingFile as exc:
            return "failed", 0, str(exc), False
        except Exception as exc:  # network, server and verification errors of any store: retry
            reason = f"{exc.__class__.__name__}: {exc}"
            transient = not isinstance(exc, TransferError)
            if attempt < retries:
                log.warning("%s: attempt %d failed (%s), retrying", wanted.key, attempt + 1, reason)
                time.sleep(0.5 * 2**attempt)
    return "failed", 0, reason, transient


def fetch_files(
    store: Store, files: list[Wanted], dest: str | Path, workers: int, retries: int, refresh: bool = False
) -> dict:
    """Fetch every file not already complete under ``dest`` (all of them if ``refresh``), ``workers`` at a time.

    Returns counts (files, fetched, skipped, failed), bytes fetched and the failures (key, reason, transient).
    """
    dest = Path(dest)
    todo = [w for w in files if refresh or not is_complete(dest / w.key, w)]
    report = {"files": len(files), "fetched": 0, "skipped": len(files) - len(todo), "failed": 0, "bytes": 0}
    failures = []
    with ThreadPoolExecutor(workers) as pool, progress(total=len(todo), desc="download", unit="file") as bar:
        jobs = {pool.submit(_fetch_with_retries, store, w, dest / w.key, retries): w for w in todo}
        for job in as_completed(jobs):
            wanted, (status, size, reason, transient) = jobs[job], job.result()
            report[status] += 1
            report["bytes"] += size
            if reason:
                failures.append({"key": wanted.key, "reason": reason, "transient": transient})
                log.warning("could not fetch %s from %s: %s", wanted.key, store.describe(), reason)
            bar.update()
    report["failures"] = sorted(failures, key=lambda f: f["key"])
    return report
