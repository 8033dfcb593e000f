"""The DVC remote on S3: `dvc push` / `dvc pull` of a small real DVC project against a real S3 server.

The server is moto in its own process on 127.0.0.1 (tests/s3server.py); nothing leaves the machine. The remote
is set up as the repository's own (.dvc/config: `storage` = s3://seap-dvc/cache, the default), with the endpoint
only in the git-ignored .dvc/config.local and the credentials only in the environment (boto3's chain).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests import s3server

s3_server = s3server.s3_server  # the fixture: a moto server process, dummy credentials in the environment

DVC = Path(sys.executable).parent / "dvc"
BUCKET, PREFIX = "seap-dvc", "cache/"
REMOTE_URL = f"s3://{BUCKET}/{PREFIX.rstrip('/')}"

TRAIN = """\
import json, random, sys
from pathlib import Path
out = Path(sys.argv[1])
(out / "tokenizer").mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
(out / "weights.bin").write_bytes(rng.randbytes(96 * 1024))
(out / "config.json").write_text(json.dumps({"layers": 2, "width": 32}))
(out / "tokenizer" / "vocab.txt").write_text("".join(f"tok{k}\\n" for k in range(100)))
"""

EVALUATE = """\
import json, sys
from pathlib import Path
models, out = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(p for p in models.rglob("*") if p.is_file())
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"files": len(files), "bytes": sum(p.stat().st_size for p in files)}, indent=2))
"""

DVC_YAML = """\
stages:
  train:
    cmd: python train.py models
    deps: [train.py]
    outs: [models]
  evaluate:
    cmd: python evaluate.py models outputs/metrics.json
    deps: [evaluate.py, models]
    outs: [outputs/metrics.json]
"""


def _env(tmp_path: Path) -> dict[str, str]:
    """The test's environment (dummy credentials from the fixture), this venv's python/dvc first on PATH, and
    DVC, git and boto3 kept away from the user's own configuration."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "gitconfig").touch()
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"),
        "GIT_CONFIG_GLOBAL": str(home / "gitconfig"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
    }
    env.pop("AWS_PROFILE", None)
    return env


def _run(project: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def _snapshot(project: Path) -> dict[str, bytes]:
    """Every file of the stages' outputs, by path."""
    paths = [*(project / "models").rglob("*"), project / "outputs" / "metrics.json"]
    return {p.relative_to(project).as_posix(): p.read_bytes() for p in paths if p.is_file()}


def _objects(client) -> dict[str, tuple[str, object]]:
    """The bucket's objects under the remote's prefix: key -> (ETag, LastModified)."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = (obj["ETag"].strip('"'), obj["LastModified"])
    return found


def _locked_md5s(project: Path) -> dict[str, str]:
    """Each stage output's MD5 as dvc.lock records it (a directory's ends in .dir)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage["outs"]}


def _key(md5: str) -> str:
    """Where DVC 3 keeps an object of that hash in the remote."""
    return f"{PREFIX}files/md5/{md5[:2]}/{md5[2:]}"


def test_dvc_push_and_pull_through_the_s3_remote(tmp_path, s3_server):
    import boto3

    started = time.monotonic()
    project, env = tmp_path / "project", _env(tmp_path)
    project.mkdir()

    def dvc(*args: str) -> str:
        result = _run(project, env, str(DVC), *args)
        return result.stdout + result.stderr

    def dvc_json(*args: str):
        return json.loads(_run(project, env, str(DVC), *args, "--json").stdout)

    _run(project, env, "git", "init", "-q")
    dvc("init", "-q")
    (project / "train.py").write_text(TRAIN)
    (project / "evaluate.py").write_text(EVALUATE)
    (project / "dvc.yaml").write_text(DVC_YAML)
    dvc("repro")
    produced = _snapshot(project)
    assert len(produced) == 4 and json.loads(produced["outputs/metrics.json"])["files"] == 3

    # The remote, as the repository configures it: url and default in .dvc/config, the endpoint only locally.
    dvc("remote", "add", "-d", "storage", REMOTE_URL)
    dvc("remote", "modify", "--local", "storage", "endpointurl", s3_server)
    config, local = (project / ".dvc" / "config").read_text(), (project / ".dvc" / "config.local").read_text()
    assert REMOTE_URL in config and "remote = storage" in config
    assert "endpointurl" not in config and s3_server not in config
    assert f"endpointurl = {s3_server}" in local
    _run(project, env, "git", "check-ignore", "-q", ".dvc/config.local")  # DVC's own .dvc/.gitignore

    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=BUCKET)
    dvc("push")

    # Every output file and the models/ directory listing are in the bucket, content-addressed by MD5.
    lock = _locked_md5s(project)
    expected = {_key(hashlib.md5(data).hexdigest()) for data in produced.values()} | {_key(lock["models"])}
    assert lock["models"].endswith(".dir")
    assert lock["outputs/metrics.json"] == hashlib.md5(produced["outputs/metrics.json"]).hexdigest()
    pushed = _objects(client)
    assert set(pushed) == expected
    for data in produced.values():  # a single-part upload's ETag is the MD5 of its body
        assert pushed[_key(hashlib.md5(data).hexdigest())][0] == hashlib.md5(data).hexdigest()

    # A second push with nothing new uploads nothing: same objects, same ETags, same upload times.
    time.sleep(1.1)  # LastModified has one-second resolution: a re-upload would show
    assert "Everything is up to date" in dvc("push")
    assert _objects(client) == pushed

    # Lose the outputs and the local cache; `dvc pull` brings both back from S3, byte for byte.
    shutil.rmtree(project / "models")
    (project / "outputs" / "metrics.json").unlink()
    shutil.rmtree(project / ".dvc" / "cache")
    dvc("pull")
    assert _snapshot(project) == produced
    assert dvc_json("status") == {}  # outputs match dvc.lock: nothing to reproduce
    assert dvc_json("status", "--cloud") == {}  # local cache and remote in sync
    assert "Data and pipelines are up to date" in dvc("status")

    # Nothing committed names the server or holds a credential: the endpoint lives in config.local only.
    _run(project, env, "git", "add", "-A")
    _run(project, env, "git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "x")
    committed = _run(project, env, "git", "ls-files").stdout.split()
    assert ".dvc/config" in committed and ".dvc/config.local" not in committed and "dvc.lock" in committed
    secrets = {s3_server, "127.0.0.1", "endpointurl", "access_key", "secret", *s3server.DUMMY_CREDENTIALS.values()}
    for name in committed:
        text = (project / name).read_text(errors="replace")
        assert not [s for s in secrets if s in text], name
    assert time.monotonic() - started < 60
