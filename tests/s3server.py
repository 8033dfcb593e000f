"""A real S3 server for tests: moto in server mode, in its own process, on a free 127.0.0.1 port.

`moto_server()` starts it and yields its endpoint URL; the `s3_server` fixture adds dummy credentials (and drops
any AWS profile) so that boto3, s3fs and DVC in this process and its children talk to it and nothing else.
Import the fixture into a test module (`from tests.s3server import s3_server`) to use it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

HOST = "127.0.0.1"
START_DEADLINE_S = 30

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Run `python -m moto.server` until the block ends; yields `http://127.0.0.1:<port>`."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
                break
            assert server.poll() is None, f"moto server exited with status {server.returncode} before listening"
            assert time.monotonic() < deadline, f"moto server not listening on {HOST}:{port} after {START_DEADLINE_S}s"
            time.sleep(0.1)
        yield f"http://{HOST}:{port}"
    finally:
        stop_process(server)


def stop_process(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """Terminate a server process, killing it if it does not stop within ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def batch_outputs(client, bucket: str, prefix: str) -> dict[str, bytes]:
    """id -> audio bytes of every batch output under ``prefix`` whose sidecar (the completion marker) exists."""
    import json

    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}
    found = {}
    for key in keys:
        if key.endswith(".json") and key.rsplit("/", 1)[-1] not in ("manifest.json", "summary.json"):
            sidecar = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            audio = key.rsplit("/", 1)[0] + "/" + sidecar["audio"]
            found[sidecar["id"]] = client.get_object(Bucket=bucket, Key=audio)["Body"].read()
    return found


@contextlib.contextmanager
def s3_bucket(bucket: str, credentials: dict[str, str] = DUMMY_CREDENTIALS) -> Iterator[tuple[str, object]]:
    """A moto server with ``bucket`` created and ``credentials`` (no AWS profile, its endpoint as
    AWS_ENDPOINT_URL) in the environment until the block ends; yields (endpoint, boto3 client)."""
    import boto3

    with pytest.MonkeyPatch.context() as mp, moto_server() as endpoint:
        for key, value in credentials.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=bucket)
        yield endpoint, client


@pytest.fixture
def s3_server(monkeypatch) -> Iterator[str]:
    """A moto S3 server in its own process on a free 127.0.0.1 port, with dummy credentials."""
    for key, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with moto_server() as endpoint:
        yield endpoint
