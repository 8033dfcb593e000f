"""Staging a data source into ``raw_dir`` (the download stage's library).

The shipped corpus is verified against SHA256SUMS and copied; a collection (local folder, HTTP(S), S3,
AudioSet-strong layout) has its metadata files fetched, then every audio file its metadata names,
in parallel, resumably and verified (see ``transfer``).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from seap_model.config import Params
from seap_model.data.collection import CollectionSource, manifest_files, read_collection
from seap_model.data.corpus import METADATA
from seap_model.data.stores import open_store
from seap_model.data.transfer import Wanted, fetch_files
from seap_model.errors import SeapError
from seap_model.progress import progress

log = logging.getLogger(__name__)

CHECKSUMS = "SHA256SUMS"
AUDIO_DIR = "audio"
DOCS = ("ATTRIBUTION.md", "licenses")  # copied along, checked against the source itself
_CHUNK = 1 << 20


class DownloadError(SeapError, RuntimeError):
    """The corpus cannot be staged; the message names the file."""


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _audio_files(corpus_dir: Path) -> list[str]:
    return sorted(p.relative_to(corpus_dir).as_posix() for p in (corpus_dir / AUDIO_DIR).rglob("*") if p.is_file())


def write_checksums(corpus_dir: str | Path) -> Path:
    """(Re)write ``SHA256SUMS`` (``sha256sum`` format) for metadata.csv and every audio file."""
    corpus_dir = Path(corpus_dir)
    files = [METADATA, *_audio_files(corpus_dir)]
    path = corpus_dir / CHECKSUMS
    path.write_text("".join(f"{file_sha256(corpus_dir / f)}  {f}\n" for f in files))
    return path


def read_checksums(path: Path) -> dict[str, str]:
    """Parse a ``sha256sum`` file into {relative path: hex digest}."""
    if not path.is_file():
        raise DownloadError(f"{path}: checksum file not found (create it with write_checksums)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DownloadError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    sums: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        digest, sep, name = line.partition(" ")
        name = name.removeprefix(" ").removeprefix("*")
        rel = Path(name)
        if not sep or len(digest) != 64 or not name or rel.is_absolute() or ".." in rel.parts:
            raise DownloadError(f"{path}:{lineno}: expected '<sha256>  <relative path>', got {line!r}")
        sums[name] = digest.lower()
    return sums


def _stage(src: Path, dst: Path, expected: str) -> int | None:
    """Copy ``src`` to ``dst`` atomically, verifying its checksum; None if ``dst`` is already right.

    Returns the number of bytes copied.
    """
    if dst.is_file() and file_sha256(dst) == expected:
        return None
    if not src.is_file():
        raise DownloadError(f"{src}: listed in {CHECKSUMS} but missing from the corpus")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    digest = hashlib.sha256()
    with src.open("rb") as fin, tmp.open("wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
    if digest.hexdigest() != expected:
        tmp.unlink()
        raise DownloadError(
            f"{src}: checksum mismatch (expected {expected}, got {digest.hexdigest()}); "
            f"the corpus file is corrupt or {CHECKSUMS} is stale"
        )
    tmp.replace(dst)
    return dst.stat().st_size


def _docs(corpus_dir: Path) -> list[Path]:
    """The attribution and licence files that travel with the audio."""
    out = []
    for name in DOCS:
        path = corpus_dir / name
        if not path.exists():
            raise DownloadError(f"{path}: missing (the corpus licences require it to travel with the audio)")
        out += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return out


def download_collection(source: CollectionSource, raw_dir: Path) -> dict:
    """Fetch a collection's metadata files (always, they are small), then the audio files they name.

    Audio files already complete are skipped, so a killed download resumes. A file missing from the store or
    failing its verification is reported (and later rejected by the segment stage); no audio file at all is an
    error, and so is a file the store did not deliver (a network or server error outlasting the retries): the
    stage fails, naming it, so that the run is not recorded as done and a rerun fetches exactly what is missing.
    """
    store = open_store(source)
    log.info("downloading %s into %s", store.describe(), raw_dir)
    metadata = [Wanted(key) for key in manifest_files(source)]
    meta = fetch_files(store, metadata, raw_dir, source.workers, source.retries, refresh=True)
    if meta["failures"]:
        first = meta["failures"][0]
        raise DownloadError(f"{store.describe()}: cannot fetch metadata file {first['key']} ({first['reason']})")
    clips = read_collection(source, raw_dir).clips
    report = fetch_files(
        store, [Wanted(c.key, c.sha256, c.size) for c in clips], raw_dir, source.workers, source.retries
    )
    transient = [f for f in report["failures"] if f["transient"]]
    if transient:  # not a bad file: the store did not answer; failing the stage makes a rerun fetch the rest
        first = transient[0]
        raise DownloadError(
            f"{store.describe()}: {len(transient)} of {len(clips)} audio files could not be fetched, e.g. "
            f"{first['key']} ({first['reason']}); the {report['fetched'] + report['skipped']} that arrived are kept, "
            "run the download again for the rest"
        )
    if clips and report["failed"] == len(clips):
        raise DownloadError(f"{store.describe()}: none of the {len(clips)} audio files could be fetched")
    log.info(
        "%s: %d audio files (%d fetched, %d already here, %d failed, %.1f MB)",
        raw_dir,
        report["files"],
        report["fetched"],
        report["skipped"],
        report["failed"],
        report["bytes"] / 1e6,
    )
    return report


def stage_shipped(params: Params) -> dict:
    """Verify the shipped corpus and stage it into ``params.data.raw_dir``.

    Files already staged with the right checksum are skipped. Returns a report with the number of
    files staged and skipped and the bytes copied.
    """
    src, dst = Path(params.data.corpus), Path(params.data.raw_dir)
    sums = read_checksums(src / CHECKSUMS)
    unlisted = [f for f in _audio_files(src) if f not in sums]
    if unlisted:
        raise DownloadError(f"{src}: {len(unlisted)} audio file(s) not in {CHECKSUMS}, e.g. {unlisted[0]}")
    if METADATA not in sums:
        raise DownloadError(f"{src / CHECKSUMS}: no checksum for {METADATA}")
    files = [(src / name, digest) for name, digest in sorted(sums.items())]
    files += [(path, None) for path in [src / CHECKSUMS, *_docs(src)]]
    report = {"files": 0, "staged": 0, "skipped": 0, "bytes_staged": 0}
    for path, digest in progress(files, desc="download", unit="file"):
        copied = _stage(path, dst / path.relative_to(src), digest or file_sha256(path))
        report["files"] += 1
        if copied is None:
            report["skipped"] += 1
        else:
            report["staged"] += 1
            report["bytes_staged"] += copied
    log.info(
        "staged %d of %d corpus files into %s (%d already there, %.1f MB copied)",
        report["staged"],
        report["files"],
        dst,
        report["skipped"],
        report["bytes_staged"] / 1e6,
    )
    return report
