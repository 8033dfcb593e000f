"""Where batch jobs are read and outputs written: a local folder or an S3 bucket, named by a URI.

``open_storage("s3://bucket/prefix")`` or ``open_storage("/some/folder")`` gives a ``Storage`` rooted there;
keys are relative POSIX paths under it. S3 endpoint, region and credentials come from boto3's standard chain
(``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``, env vars, ``~/.aws``, instance roles): never from
params and never logged (``describe()`` names the bucket and prefix only; ``progress.keep_credentials_out_of_logs``
holds the S3 client's wire loggers, which print signing headers at DEBUG, at INFO). botocore retries in
``standard`` mode (5 retries unless ``AWS_MAX_ATTEMPTS`` says otherwise), with a connection pool sized to the
caller's workers; a network or server error that outlasts them is a ``StorageUnavailable`` naming the object,
which the caller may retry (``is_transient``).

Writes are all-or-nothing: an S3 PUT is visible only once complete, and a local write goes to a temporary name
then ``os.replace``. Callers that write several objects per item write their completion marker last.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from seap_model.errors import SeapError
from seap_model.rows import control_problem


class StorageError(SeapError):
    """A storage location or key that cannot be used."""


class MissingObject(StorageError, FileNotFoundError):
    """No object under this key (permanent: not retried)."""


class StorageUnavailable(StorageError, ConnectionError):
    """The store did not answer for an object (network, timeout, 5xx, throttling) after the client's retries."""


class UnsafeKey(StorageError, ValueError):
    """A key that would leave its storage root (``..``, absolute) or is not a key at all (a URL)."""


def safe_key(key: str) -> str:
    """``key`` as a normalised relative POSIX key; UnsafeKey if it is absolute, has ``..``, a control character
    (NUL, a newline) or is a URL."""
    if not isinstance(key, str) or not key.strip():
        raise UnsafeKey("an empty key")
    if problem := control_problem(key):
        raise UnsafeKey(f"{key!r} {problem}")
    if "://" in key:
        raise UnsafeKey(f"{key!r} is a URL, not a key")
    if key.startswith(("/", "\\")) or (len(key) > 1 and key[1] == ":"):
        raise UnsafeKey(f"{key!r} is an absolute path")
    parts = key.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafeKey(f"{key!r} climbs out of its folder ('..')")
    return posixpath.normpath("/".join(p for p in parts if p not in ("", ".")))


class Storage(Protocol):
    uri: str

    def describe(self) -> str: ...

    def where(self, key: str) -> str: ...

    def read(self, key: str) -> bytes: ...

    def write(self, key: str, data: bytes) -> None: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> list[str]: ...


class LocalFiles:
    """Reading only, by path (a key is any file path): the generate stage's references, which live wherever the
    test split or the prompts file says."""

    def where(self, key: str) -> str:
        return key

    def read(self, key: str) -> bytes:
        try:
            return Path(key).read_bytes()
        except OSError as exc:
            raise MissingObject(f"{key}: cannot be read ({exc.strerror or exc})") from None
        except ValueError as exc:  # a NUL in the path, or one that is not valid Unicode
            raise MissingObject(f"{key!r}: cannot be read ({exc})") from None


@dataclass
class LocalStorage:
    root: Path

    @property
    def uri(self) -> str:
        return str(self.root)

    def describe(self) -> str:
        return str(self.root)

    def where(self, key: str) -> str:
        return str(self._path(key))

    def _path(self, key: str) -> Path:
        """The file of ``key``; UnsafeKey when it leads out of the root, by its name or through a symbolic link."""
        path = self.root / safe_key(key)
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise UnsafeKey(f"{key!r} leads out of {self.root} (through a symbolic link)")
        return path

    def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise MissingObject(f"{path}: not found") from None
        except IsADirectoryError:
            raise MissingObject(f"{path}: is a folder, not a file") from None

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        found = (p for p in base.rglob("*") if p.is_file() and not p.name.endswith(".partial"))
        return sorted(p.relative_to(self.root).as_posix() for p in found)


def s3_client(workers: int = 1):
    """A boto3 S3 client from the standard credential/endpoint chain, retrying in ``standard`` mode, with a
    connection pool for ``workers`` concurrent users (at least botocore's default 10)."""
    import boto3
    from botocore.config import Config

    retries = {"mode": "standard"}
    if "AWS_MAX_ATTEMPTS" not in os.environ:  # the standard chain's own setting wins over this default
        retries["max_attempts"] = 5
    config = Config(
        retries=retries,
        max_pool_connections=max(10, workers),
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.session.Session().client("s3", config=config)


class S3Storage:
    """An S3 prefix. The client is made on first use and not pickled, so a storage can travel to Dask workers."""

    def __init__(self, bucket: str, prefix: str = "", workers: int = 1):
        self.bucket, self.prefix, self.workers = bucket, prefix.strip("/"), workers
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client(self.workers)
        return self._client

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def describe(self) -> str:
        return self.uri

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _key(self, key: str) -> str:
        key = safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _answer(self, what: str, full: str):
        """A transient error of this call as a ``StorageUnavailable`` naming the object (a one-line message)."""
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            reason = " ".join(f"{exc.__class__.__name__}: {exc}".split())
            raise StorageUnavailable(f"s3://{self.bucket}/{full}: cannot {what} ({reason})") from exc

    def read(self, key: str) -> bytes:
        full = self._key(key)
        with self._answer("read", full):
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=full)
            except self.client.exceptions.NoSuchKey:
                raise MissingObject(f"s3://{self.bucket}/{full}: no such key") from None
            with obj["Body"] as body:
                return body.read()

    def write(self, key: str, data: bytes) -> None:
        full = self._key(key)
        with self._answer("write", full):
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data)

    def delete(self, key: str) -> None:
        full = self._key(key)
        with self._answer("delete", full):
            self.client.delete_object(Bucket=self.bucket, Key=full)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        full = self._key(key)
        with self._answer("check", full):
            try:
                self.client.head_object(Bucket=self.bucket, Key=full)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return True

    def list(self, prefix: str = "") -> list[str]:
        start = self._key(prefix) if prefix else self.prefix
        start = f"{start}/" if start and not start.endswith("/") else start
        keys = []
        with self._answer("list", start + "*"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                keys += [o["Key"] for o in page.get("Contents", [])]
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[cut:] for k in keys)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``; StorageError if it is not one."""
    if not uri.startswith("s3://"):
        raise StorageError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket")
    return bucket, key


def open_storage(uri: str | Path, workers: int = 1) -> Storage:
    """Storage rooted at ``uri``: ``s3://bucket[/prefix]`` or a local folder (other URL schemes are refused)."""
    uri = str(uri)
    if uri.startswith("s3://"):
        bucket, prefix = split_s3_uri(uri)
        return S3Storage(bucket, prefix, workers=workers)
    if "://" in uri:
        raise StorageError(f"{uri!r}: only s3:// URIs and local paths are supported")
    return LocalStorage(Path(uri))


def is_transient(exc: BaseException) -> bool:
    """Whether an error is worth retrying: the connection failed or timed out, or S3 answered 5xx/throttled."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or error.get("Code") in ("SlowDown", "RequestTimeout", "Throttling")
    return False
