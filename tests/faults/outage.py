"""S3 outages for the fault suite: the endpoint (moto behind ``tests.tcpproxy.Proxy``) goes away once a run has
made a seeded amount of progress, and comes back after a seeded time (a blip, shorter than the retry budget: the
run must ride through) or only once the run has given up (an outage longer than any retry budget: the run must
fail cleanly, naming the object). Objects are counted in a versioned bucket, so that a re-upload shows as a
second version of its key however quickly it happens, and a second content under one key as a second ETag.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import boto3
import pytest

from tests.s3server import DUMMY_CREDENTIALS, moto_server
from tests.tcpproxy import Proxy

POLL_S = 0.01


@dataclass(frozen=True)
class Plan:
    """One trial's outage: down once ``progress() >= after``, for ``down_s`` seconds (None: until the run ends)."""

    after: int
    down_s: float | None

    @property
    def blip(self) -> bool:
        return self.down_s is not None


def plans(rng: random.Random, trials: int, after: tuple[int, int], blip_s: tuple[float, float]) -> list[Plan]:
    """``trials`` outages, blips and run-long ones alternating (from a seeded start), each at a seeded point."""
    first = rng.random() < 0.5
    return [
        Plan(rng.randint(*after), round(rng.uniform(*blip_s), 2) if (n % 2 == 0) == first else None)
        for n in range(trials)
    ]


class Outage:
    """While the block runs: wait until ``progress()`` reaches the plan's point, stop the proxy, restore it after
    the plan's time (or when the block ends). ``hit``: the progress seen when the endpoint went away."""

    def __init__(self, proxy: Proxy, plan: Plan, progress: Callable[[], int]):
        self.proxy, self.plan, self.progress = proxy, plan, progress
        self.hit: int | None = None
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._ended.is_set() and (seen := self.progress()) < self.plan.after:
            time.sleep(POLL_S)
        if self._ended.is_set():
            return
        self.proxy.stop()
        self.hit = seen
        self._ended.wait(self.plan.down_s)
        self.proxy.start()

    def __enter__(self) -> Outage:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._ended.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the outage thread did not end"


@dataclass
class Endpoint:
    """A moto server and a proxy in front of it; ``client`` talks to moto directly (never through the proxy)."""

    url: str
    proxy: Proxy
    client: object

    def bucket(self, name: str) -> str:
        """Create a versioned bucket: every PUT of a key is one version of it."""
        self.client.create_bucket(Bucket=name)
        self.client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def versions(self, bucket: str, prefix: str = "") -> dict[str, list[str]]:
        """key -> the ETag of every version written to it (a PUT is a version; delete markers aside)."""
        found: dict[str, list[str]] = {}
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for version in page.get("Versions", []):
                found.setdefault(version["Key"], []).append(version["ETag"])
        return found

    def writes(self, bucket: str, prefix: str = "") -> Counter:
        """key -> how many times it was written."""
        return Counter({key: len(tags) for key, tags in self.versions(bucket, prefix).items()})

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The keys visible now (current versions)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@contextlib.contextmanager
def s3_endpoint(pause: float = 0.0) -> Iterator[Endpoint]:
    """A moto server behind a proxy relaying with ``pause`` seconds per chunk (a slow link, so that a run is
    still under way when its outage comes), with dummy credentials in the environment."""
    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        for key, value in DUMMY_CREDENTIALS.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        url = stack.enter_context(moto_server())
        proxy = Proxy(int(url.rsplit(":", 1)[1]), pause=pause).start()
        stack.callback(proxy.stop)
        yield Endpoint(url, proxy, boto3.client("s3", endpoint_url=url))


def one_line_error(stderr: str, prefix: str) -> str:
    """The error a command ended with: its last line, which must start with ``prefix``, and no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(prefix), stderr[-3000:]
    return last
