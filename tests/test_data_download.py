"""The download stage: checksums, atomic staging, skipping, mismatch detection."""

from pathlib import Path

import pytest

from seap_model.config import parse_params
from seap_model.data.fetch import (
    CHECKSUMS,
    DownloadError,
    file_sha256,
    read_checksums,
    write_checksums,
)
from tests.runner import run_stage

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "sound_events"


def _corpus(root: Path) -> Path:
    corpus = root / "corpus"
    (corpus / "audio").mkdir(parents=True)
    (corpus / "licenses").mkdir()
    (corpus / "metadata.csv").write_text("file,label,caption,duration\naudio/a.flac,dog,a dog barking,1.0\n")
    (corpus / "audio" / "a.flac").write_bytes(b"not really flac, download does not decode")
    (corpus / "audio" / "b.flac").write_bytes(b"another clip")
    (corpus / "ATTRIBUTION.md").write_text("# Attribution\n")
    (corpus / "licenses" / "pkg.copyright").write_text("GPL\n")
    write_checksums(corpus)
    return corpus


def _params(root: Path, corpus: Path):
    return parse_params({"data": {"corpus": str(corpus), "raw_dir": str(root / "raw")}})


def test_checksum_file_is_sha256sum_format(tmp_path):
    corpus = _corpus(tmp_path)
    lines = (corpus / CHECKSUMS).read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["metadata.csv", "audio/a.flac", "audio/b.flac"]
    assert read_checksums(corpus / CHECKSUMS)["audio/a.flac"] == file_sha256(corpus / "audio" / "a.flac")


def test_download_stages_everything_then_skips(tmp_path):
    corpus = _corpus(tmp_path)
    params = _params(tmp_path, corpus)
    first = run_stage("download", params)
    assert first["files"] == first["staged"] == 6  # 3 checksummed + SHA256SUMS + ATTRIBUTION + 1 licence
    assert first["skipped"] == 0 and first["bytes_staged"] > 0
    raw = tmp_path / "raw"
    for rel in [
        "metadata.csv",
        "audio/a.flac",
        "audio/b.flac",
        CHECKSUMS,
        "ATTRIBUTION.md",
        "licenses/pkg.copyright",
    ]:
        assert (raw / rel).read_bytes() == (corpus / rel).read_bytes()
    assert not list(raw.rglob("*.part"))

    (raw / "audio" / "b.flac").write_bytes(b"damaged copy")
    second = run_stage("download", params)
    assert (second["staged"], second["skipped"]) == (1, 5)
    assert (raw / "audio" / "b.flac").read_bytes() == b"another clip"


def test_checksum_mismatch_in_source_names_the_file(tmp_path):
    corpus = _corpus(tmp_path)
    (corpus / "audio" / "b.flac").write_bytes(b"bit rot")
    with pytest.raises(DownloadError, match=r"b\.flac: checksum mismatch"):
        run_stage("download", _params(tmp_path, corpus))
    assert not (tmp_path / "raw" / "audio" / "b.flac").exists()
    assert not list((tmp_path / "raw").rglob("*.part"))


def test_missing_and_unlisted_files_are_errors(tmp_path):
    corpus = _corpus(tmp_path)
    (corpus / "audio" / "c.flac").write_bytes(b"new clip")
    with pytest.raises(DownloadError, match=r"not in SHA256SUMS, e\.g\. audio/c\.flac"):
        run_stage("download", _params(tmp_path, corpus))
    (corpus / "audio" / "c.flac").unlink()
    (corpus / "audio" / "a.flac").unlink()
    with pytest.raises(DownloadError, match=r"a\.flac: listed in SHA256SUMS but missing"):
        run_stage("download", _params(tmp_path, corpus))


def test_malformed_checksum_line_names_the_line(tmp_path):
    corpus = _corpus(tmp_path)
    with (corpus / CHECKSUMS).open("a") as f:
        f.write("deadbeef  ../escape.flac\n")
    with pytest.raises(DownloadError, match=r"SHA256SUMS:4:"):
        run_stage("download", _params(tmp_path, corpus))


def test_shipped_corpus_matches_its_checksums():
    sums = read_checksums(SHIPPED / CHECKSUMS)
    assert len(sums) == 1 + len(list((SHIPPED / "audio").glob("*.flac")))
    assert all(file_sha256(SHIPPED / rel) == digest for rel, digest in sums.items())
