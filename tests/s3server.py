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
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def s3_server(monkeypatch) -> Iterator[str]:
    """A moto S3 server in its own process on a free 127.0.0.1 port, with dummy credentials."""
    for key, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with moto_server() as endpoint:
        yield endpoint
