"""Download sources: verified atomic transfers, and kill-and-resume against a real HTTP server and a real S3 server.

The HTTP server (http.server, throttled) and the S3 server (moto in server mode, its own process) listen
on 127.0.0.1; nothing leaves the machine.
"""

import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from seap_model.config import parse_params
from seap_model.data.fetch import DownloadError
from seap_model.data.stores import HttpStore, LocalStore, MissingFile, S3Store, open_store
from seap_model.data.transfer import TransferError, Wanted, fetch_one
from tests import s3server
from tests.runner import run_stage

N_FILES, FILE_BYTES = 24, 48 * 1024
KILL_AFTER = 4  # files arrived before the first run is killed


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _collection(root: Path, with_checksums: bool = True) -> dict[str, bytes]:
    """N_FILES random 'audio' files and a JSONL manifest naming them (with sha256 and size)."""
    files = {f"audio/clip_{k:02d}.flac": os.urandom(FILE_BYTES) for k in range(N_FILES)}
    rows = []
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
        row = {"clip": key, "events": [{"label": "dog", "onset": 0, "offset": 1}]}
        rows.append(row | ({"sha256": _sha(data), "size": len(data)} if with_checksums else {}))
    (root / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return files


def _params(raw: Path, source: dict):
    return parse_params({"data": {"raw_dir": str(raw), "source": source | {"manifest": "clips.jsonl", "workers": 2}}})


def _arrived(raw: Path) -> list[Path]:
    return list((raw / "audio").glob("*.flac"))


def _run_and_kill(raw: Path, params: dict, prelude: str = "") -> None:
    """Run the download in a child process and SIGKILL it once KILL_AFTER files have arrived."""
    script = (
        "import json, sys\n" + prelude + "from seap_model.config import parse_params\n"
        "from tests.runner import run_stage\n"
        "run_stage('download', parse_params(json.loads(sys.argv[1])))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, json.dumps(params)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(_arrived(raw)) < KILL_AFTER:
            assert child.poll() is None, "the download ended before it could be killed"
            assert time.monotonic() < deadline, "no file arrived"
            time.sleep(0.02)
        child.kill()
    finally:
        child.wait()
    assert KILL_AFTER <= len(_arrived(raw)) < N_FILES, "killed midway"


def _assert_complete(raw: Path, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        assert (raw / key).read_bytes() == data, key
    assert sorted(p.relative_to(raw).as_posix() for p in _arrived(raw)) == sorted(files)
    assert not list(raw.rglob("*.part"))


# --- transfers ---------------------------------------------------------------------------------------------


def test_fetch_one_verifies_before_renaming(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(b"hello")
    store, dest = LocalStore(tmp_path / "src"), tmp_path / "dst" / "a.bin"
    with pytest.raises(TransferError, match=r"a\.bin: sha256: expected"):
        fetch_one(store, Wanted("a.bin", sha256="0" * 64), dest)
    with pytest.raises(TransferError, match=r"a\.bin: size: expected 6, got 5"):
        fetch_one(store, Wanted("a.bin", size=6), dest)
    assert not dest.exists() and not list(dest.parent.iterdir())  # nothing half-written left behind
    with pytest.raises(MissingFile):
        fetch_one(store, Wanted("b.bin"), dest)
    assert fetch_one(store, Wanted("a.bin", _sha(b"hello"), 5), dest) == 5 and dest.read_bytes() == b"hello"


def test_local_source_reports_missing_and_corrupt_files(tmp_path):
    files = _collection(tmp_path / "src")
    (tmp_path / "src" / "audio" / "clip_03.flac").write_bytes(b"bit rot")
    (tmp_path / "src" / "audio" / "clip_05.flac").unlink()
    params = _params(tmp_path / "raw", {"type": "local", "root": str(tmp_path / "src"), "retries": 0})
    report = run_stage("download", params)
    assert (report["fetched"], report["failed"]) == (N_FILES - 2, 2)
    assert [f["key"] for f in report["failures"]] == ["audio/clip_03.flac", "audio/clip_05.flac"]
    assert "sha256: expected" in report["failures"][0]["reason"] or "size" in report["failures"][0]["reason"]
    assert not (tmp_path / "raw" / "audio" / "clip_03.flac").exists()
    (tmp_path / "src" / "audio" / "clip_03.flac").write_bytes(files["audio/clip_03.flac"])
    again = run_stage("download", params)  # resumes: only the repaired file moves
    assert (again["fetched"], again["skipped"], again["failed"]) == (1, N_FILES - 2, 1)
    (tmp_path / "src" / "clips.jsonl").unlink()
    with pytest.raises(DownloadError, match=r"cannot fetch metadata file clips\.jsonl"):
        run_stage("download", params)


# --- HTTP --------------------------------------------------------------------------------------------------


class _SlowHandler(SimpleHTTPRequestHandler):
    """Serves a folder, sending each body in 8 KiB pieces with a pause, and records every GET."""

    requests: list[str]

    def copyfile(self, source, outputfile):
        while chunk := source.read(8192):
            outputfile.write(chunk)
            outputfile.flush()
            time.sleep(0.01)

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = type("Handler", (_SlowHandler,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_port}/data/", handler.requests
    server.shutdown()
    server.server_close()


def test_http_download_killed_midway_resumes_and_every_file_arrives_once(tmp_path, http_server):
    served, base_url, requests = http_server
    files = _collection(served / "data")
    raw = tmp_path / "raw"
    params = _params(raw, {"type": "http", "base_url": base_url})
    _run_and_kill(raw, params.model_dump(mode="json"))
    done_before = {p.relative_to(raw).as_posix() for p in _arrived(raw)}
    first_run = len(requests)

    report = run_stage("download", params)
    assert report["fetched"] + report["skipped"] == N_FILES and report["failed"] == 0
    assert report["skipped"] == len(done_before)
    _assert_complete(raw, files)
    again = [r.removeprefix("/data/") for r in requests[first_run:]]
    assert "clips.jsonl" in again and not done_before & set(again)  # arrived files are never fetched twice
    assert sorted(set(again) - {"clips.jsonl"}) == sorted(set(files) - done_before)
    assert HttpStore("http://user:secret@127.0.0.1:8/x/", 1).describe() == "http://127.0.0.1:8/x/"


def test_http_missing_file_is_reported_not_retried(tmp_path, http_server):
    served, base_url, requests = http_server
    files = _collection(served / "data")
    (served / "data" / "audio" / "clip_07.flac").unlink()
    report = run_stage("download", _params(tmp_path / "raw", {"type": "http", "base_url": base_url, "retries": 3}))
    assert report["failed"] == 1 and "HTTP 404" in report["failures"][0]["reason"]
    assert requests.count("/data/audio/clip_07.flac") == 1
    assert len(_arrived(tmp_path / "raw")) == len(files) - 1


# --- S3 (moto server process) ------------------------------------------------------------------------------


s3_server = s3server.s3_server  # the fixture (tests/s3server.py): a moto server process, dummy credentials

_SLOW_S3 = """\
import contextlib, time
from seap_model.data import stores
_open = stores.S3Store.open
class _Slow:
    def __init__(self, body): self.body = body
    def read(self, n=-1):
        time.sleep(0.02)
        return self.body.read(8192)
@contextlib.contextmanager
def _slow_open(self, key):
    with _open(self, key) as remote:
        remote.body = _Slow(remote.body)
        yield remote
stores.S3Store.open = _slow_open
"""


def test_s3_download_killed_midway_resumes_and_every_file_arrives_once(tmp_path, s3_server):
    import boto3

    files = _collection(tmp_path / "src", with_checksums=False)  # verified by S3's size and ETag (MD5)
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="sounds")
    for path in (tmp_path / "src").rglob("*"):
        if path.is_file():
            client.upload_file(str(path), "sounds", f"collections/v1/{path.relative_to(tmp_path / 'src').as_posix()}")
    raw = tmp_path / "raw"
    source = {"type": "s3", "bucket": "sounds", "prefix": "collections/v1/", "endpoint_url": s3_server}
    params = _params(raw, source)
    _run_and_kill(raw, params.model_dump(mode="json"), prelude=_SLOW_S3)
    done_before = len(_arrived(raw))

    report = run_stage("download", params)
    assert (report["skipped"], report["fetched"], report["failed"]) == (done_before, N_FILES - done_before, 0)
    _assert_complete(raw, files)
    assert run_stage("download", params)["fetched"] == 0  # a third run has nothing left to do

    client.put_object(Bucket="sounds", Key="collections/v1/audio/clip_00.flac", Body=b"changed")
    (raw / "audio" / "clip_00.flac").unlink()
    assert run_stage("download", params)["fetched"] == 1 and (raw / "audio" / "clip_00.flac").read_bytes() == b"changed"


def test_audioset_location_names_the_store():
    def store(location: str):
        source = parse_params({"data": {"source": {"type": "audioset_strong", "location": location}}}).data.source
        return open_store(source)

    s3 = store("s3://bucket/audioset/sl")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("bucket", "audioset/sl")
    assert isinstance(store("https://host/as/"), HttpStore) and isinstance(store("/data/as"), LocalStore)
