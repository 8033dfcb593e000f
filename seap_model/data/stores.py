"""Where a collection's files come from: a local folder, an HTTP(S) base URL or an S3 prefix.

Every store opens a file by its key (a relative POSIX path) and says what it knows to verify it by:
its size and, for S3 objects uploaded in one part, its MD5 (the ETag). Descriptions never contain
credentials.
"""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from seap_model.config import AudioSetStrongSource, HttpSource, LocalSource, S3Source


class MissingFile(FileNotFoundError):
    """The store has no file under this key (a permanent error: not retried)."""


@dataclass
class Remote:
    """An opened file: a readable body and what the store says about it."""

    body: BinaryIO
    size: int | None = None
    md5: str | None = None


class Store(Protocol):
    def describe(self) -> str: ...

    def open(self, key: str) -> contextlib.AbstractContextManager[Remote]: ...


class LocalStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[Remote]:
        path = self.root / key
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise MissingFile(f"{path}: not found") from None
        with f:
            yield Remote(f, path.stat().st_size)


class HttpStore:
    def __init__(self, base_url: str, timeout_s: float):
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout_s = timeout_s

    def describe(self) -> str:
        parts = urllib.parse.urlsplit(self.base_url)
        return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[Remote]:
        url = self.base_url + urllib.parse.quote(key)
        try:
            response = urllib.request.urlopen(url, timeout=self.timeout_s)
        except urllib.error.HTTPError as err:
            if err.code in (403, 404, 410):
                raise MissingFile(f"{self.describe()}{urllib.parse.quote(key)}: HTTP {err.code}") from None
            raise
        with response:
            length = response.headers.get("Content-Length")
            yield Remote(response, int(length) if length and length.isdigit() else None)


class S3Store:
    def __init__(
        self, bucket: str, prefix: str, endpoint_url: str | None, region: str | None, anonymous: bool, timeout_s: float
    ):
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        config = Config(
            signature_version=UNSIGNED if anonymous else None,
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 1},  # retries are counted by the transfer, per file
        )
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        self.bucket, self.prefix, self.endpoint_url = bucket, prefix.strip("/"), endpoint_url

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[Remote]:
        full = f"{self.prefix}/{key}" if self.prefix else key
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=full)
        except self.client.exceptions.NoSuchKey:
            raise MissingFile(f"s3://{self.bucket}/{full}: no such key") from None
        etag = obj.get("ETag", "").strip('"')
        body = obj["Body"]
        try:
            yield Remote(body, obj.get("ContentLength"), etag if etag and "-" not in etag else None)
        finally:
            body.close()


def open_store(source: LocalSource | HttpSource | S3Source | AudioSetStrongSource) -> Store:
    """The store a collection source names (``audioset_strong.location``: folder, http(s):// or s3://)."""
    if isinstance(source, LocalSource):
        return LocalStore(source.root)
    if isinstance(source, HttpSource):
        return HttpStore(source.base_url, source.timeout_s)
    if isinstance(source, S3Source):
        return S3Store(
            source.bucket, source.prefix, source.endpoint_url, source.region, source.anonymous, source.timeout_s
        )
    location = source.location
    if location.startswith(("http://", "https://")):
        return HttpStore(location, source.timeout_s)
    if location.startswith("s3://"):
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        return S3Store(bucket, prefix, source.endpoint_url, source.region, source.anonymous, source.timeout_s)
    return LocalStore(location)
