"""Object store faults: the S3 endpoint goes away at seeded points of `seap download` from an S3 source, of a batch
job on S3, and of `dvc push` / `dvc pull` to an S3 remote, and comes back after a seeded blip (the run must ride it
out with its retries) or only once the run has given up (it must fail with one line naming the object, no
traceback). Then a rerun completes exactly what is missing: items already done are neither fetched, made nor
uploaded again, no object is duplicated or visible half-written, and every item is there exactly once.

S3 is a moto server behind a proxy that relays slowly (tests/faults/outage.py), so every run is still under way
when its outage comes; the bucket is versioned, so a re-upload shows however fast it is.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from seap_model.config import parse_params
from tests.conftest import make_tiny_pipeline, tone
from tests.faults import ledger
from tests.faults.outage import Outage, one_line_error, plans, s3_endpoint
from tests.runner import run_stage


@pytest.fixture(scope="module")
def s3():
    with s3_endpoint(pause=0.02) as endpoint:
        yield endpoint


# ---------------------------------------------------------------- seap download from an S3 source

N_FILES, FILE_BYTES = 16, 64 * 1024
DOWNLOAD_RETRIES = 2  # the transfer sleeps 0.5 s then 1 s between tries: a blip under 1.5 s is ridden out


def _arrived(raw: Path) -> dict[str, Path]:
    return {p.relative_to(raw).as_posix(): p for p in (raw / "audio").glob("*.flac")}


def test_download_from_s3_rides_out_blips_fails_cleanly_past_its_retries_and_a_rerun_fetches_only_the_missing(
    tmp_path, s3
):
    rng = ledger.rng("object store: download")
    bucket = s3.bucket("faults-sounds")
    files = {f"audio/clip_{k:02d}.flac": rng.randbytes(FILE_BYTES) for k in range(N_FILES)}
    rows = [{"clip": key, "events": [{"label": "dog", "onset": 0, "offset": 1}]} for key in files]
    for key, data in [*files.items(), ("clips.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())]:
        s3.client.put_object(Bucket=bucket, Key=f"v1/{key}", Body=data)
    source = {
        "type": "s3",
        "bucket": bucket,
        "prefix": "v1",
        "endpoint_url": s3.proxy.url,
        "manifest": "clips.jsonl",
        "workers": 2,
        "retries": DOWNLOAD_RETRIES,
    }
    figures = Counter(survived=0, lost=0, duplicated=0, clean_failures=0)
    trials = plans(rng, ledger.size(2, 10), after=(1, N_FILES - 4), blip_s=(0.2, 1.2))
    for n, plan in enumerate(trials):
        raw, params = tmp_path / f"raw{n}", tmp_path / f"params{n}.yaml"
        params.write_text(yaml.safe_dump({"data": {"raw_dir": str(raw), "source": source}}))
        with Outage(s3.proxy, plan, lambda raw=raw: len(_arrived(raw))) as outage:
            first = subprocess.run(
                [sys.executable, "-m", "seap_model.cli", "download", "--params", str(params)],
                capture_output=True,
                text=True,
                timeout=180,
            )
        assert outage.hit is not None and outage.hit < N_FILES, (plan, outage.hit)  # S3 went away mid-download
        assert "Traceback" not in first.stderr, first.stderr[-3000:]
        figures["retried"] += "retrying" in first.stderr
        if plan.blip:
            assert first.returncode == 0, (plan, first.stderr[-3000:])
        else:
            error = one_line_error(first.stderr, f"seap download: error: s3://{bucket}/v1 at {s3.proxy.url}: ")
            assert first.returncode == 2 and "could not be fetched, e.g. audio/clip_" in error, error
            figures["clean_failures"] += 1
        done = _arrived(raw)
        assert all(p.read_bytes() == files[key] for key, p in done.items())  # what arrived is whole
        assert not list(raw.rglob("*.part"))
        stamps = {key: (p.stat().st_ino, p.stat().st_mtime_ns) for key, p in done.items()}

        rerun = run_stage("download", parse_params(yaml.safe_load(params.read_text())))
        final = {key: p.read_bytes() for key, p in _arrived(raw).items()}
        figures["lost"] += sum(final.get(key) != data for key, data in files.items())
        figures["duplicated"] += rerun["fetched"] - (N_FILES - len(done))  # fetched again though it had arrived
        assert (rerun["skipped"], rerun["fetched"], rerun["failed"]) == (len(done), N_FILES - len(done), 0), plan
        assert final == files and not figures["lost"] and not figures["duplicated"]  # each file, once, whole
        again = {key: (p.stat().st_ino, p.stat().st_mtime_ns) for key, p in _arrived(raw).items() if key in done}
        assert again == stamps  # what had arrived was not written again
        figures["survived"] += 1
    ledger.record("object store", "download (S3 source)", trials=len(trials), **figures)


# ---------------------------------------------------------------- a batch job on S3 (flows/batch_generate.py)

ITEMS = 8
BATCH = ["--batch-size", "2", "--steps", "2", "--guidance", "3", "--duration", "0.5", "--precision", "fp32"]


def _wav(freq: float) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(1.0, freq=freq).numpy(), 16000, format="WAV")
    return buf.getvalue()


def _flow(argv: list[str], capsys, caplog) -> tuple[int, str, str]:
    """(exit code, stdout, stderr and the log) of the flow's command line, run in this process (its Prefect
    harness); Prefect's records are read from the log, formatted with their tracebacks if they carry one."""
    from flows.batch_generate import main

    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    log = caplog.text
    caplog.clear()
    return code, out, log + err


def _outputs(s3, bucket: str, prefix: str) -> dict[str, list[str]]:
    """item id -> its output keys (audio and sidecar) visible now; every sidecar's audio is there and decodes."""
    keys = s3.keys(bucket, prefix)
    found: dict[str, list[str]] = {}
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        if name.startswith("item"):
            found.setdefault(name.split("-", 1)[0], []).append(key)
        if name.startswith("item") and name.endswith(".json"):
            sidecar = json.loads(s3.client.get_object(Bucket=bucket, Key=key)["Body"].read())
            audio = s3.client.get_object(Bucket=bucket, Key=prefix + sidecar["audio"])["Body"].read()
            assert len(sf.read(io.BytesIO(audio))[0]) > 0.45 * 16000, key  # whole, never a cut object
    return found


@pytest.fixture
def quick_retries(monkeypatch):
    """The flow's retry policy with its budget shrunk to 1.5 s (3 retries 0.5 s apart, botocore's own retries
    off), so that an outage can outlast it within the CI budget; what is retried, and how, is the flow's own."""
    import flows.batch_generate as module

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for name in ("read_job_task", "generate_batch", "finish_task"):
        quick = getattr(module, name).with_options(retries=3, retry_delay_seconds=0.5, retry_jitter_factor=None)
        monkeypatch.setattr(module, name, quick)


def test_batch_job_on_s3_rides_out_blips_fails_cleanly_past_its_retries_and_a_rerun_makes_only_the_missing(
    tmp_path, s3, tiny_text, prefect_harness, quick_retries, monkeypatch, capsys, caplog
):
    rng = ledger.rng("object store: batch job")
    bucket = s3.bucket("faults-batch")
    for i in range(2):
        s3.client.put_object(Bucket=bucket, Key=f"jobs/refs/ref{i}.wav", Body=_wav(300.0 + 400 * i))
    rows = [{"id": f"item{i:02d}", "prompt": "a dog barking", "reference": f"refs/ref{i % 2}.wav"} for i in range(8)]
    s3.client.put_object(Bucket=bucket, Key="jobs/job.jsonl", Body="\n".join(map(json.dumps, rows)).encode())
    pipeline = tmp_path / "pipeline"
    make_tiny_pipeline(tiny_text).save_pretrained(pipeline)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.proxy.url)  # the flow reaches S3 only through the proxy
    figures = Counter(survived=0, lost=0, duplicated=0, clean_failures=0)
    trials = plans(rng, ledger.size(2, 10), after=(1, ITEMS - 3), blip_s=(0.2, 1.2))
    for n, plan in enumerate(trials):
        prefix = f"out/trial{n}/"
        argv = ["--jobs", f"s3://{bucket}/jobs/job.jsonl", "--out", f"s3://{bucket}/{prefix}"]
        argv += ["--pipeline", str(pipeline), *BATCH]
        done = lambda prefix=prefix: sum(k.endswith(".json") for k in s3.keys(bucket, prefix + "item"))  # noqa: E731
        with Outage(s3.proxy, plan, done) as outage:
            code, out, err = _flow(argv, capsys, caplog)
        assert outage.hit is not None and outage.hit < ITEMS, (plan, outage.hit)  # S3 went away mid-job
        if plan.blip:
            assert code == 0, (plan, err[-3000:])
            first = json.loads(out)  # an item whose last write got through before its answer was cut is skipped
            assert first["generated"] + first["skipped"] == ITEMS and not first["errors"], first
        else:
            error = one_line_error(err, f"python -m flows.batch_generate: error: s3://{bucket}/")
            assert code == 1 and "cannot" in error, error
            figures["clean_failures"] += 1
        figures["retried"] += "Retry 1/3" in err
        before = {i for i, keys in _outputs(s3, bucket, prefix).items() if any(k.endswith(".json") for k in keys)}
        writes = s3.writes(bucket, prefix + "item")

        code, out, err = _flow(argv, capsys, caplog)
        assert code == 0, err[-3000:]
        summary = json.loads(out)
        assert (summary["skipped"], summary["generated"]) == (len(before), ITEMS - len(before)), (plan, summary)
        after = _outputs(s3, bucket, prefix)
        figures["lost"] += len({r["id"] for r in rows} - after.keys())
        figures["duplicated"] += sum(len(keys) - 2 for keys in after.values())  # an item's audio and sidecar, once
        assert sorted(after) == [r["id"] for r in rows] and not figures["lost"] and not figures["duplicated"]
        rewritten = s3.writes(bucket, prefix + "item") - writes
        assert not [k for k in rewritten if k.rsplit("/", 1)[-1].split("-", 1)[0] in before], rewritten
        manifest = json.loads(s3.client.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read())
        assert sorted(manifest["outputs"]) == sorted(after) and not manifest["errors"]
        figures["survived"] += 1
    ledger.record("object store", "batch job on S3", trials=len(trials), **figures)


# ---------------------------------------------------------------- dvc push / dvc pull to an S3 remote

DVC_FILES, DVC_FILE_BYTES = 24, 16 * 1024


def _cache(project: Path) -> dict[str, Path]:
    """The local DVC cache's objects: hash (with .dir for a folder's listing) -> file."""
    root = project / ".dvc" / "cache" / "files" / "md5"
    return {p.parent.name + p.name: p for p in root.glob("*/*")} if root.is_dir() else {}


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _dvc_failure(result: subprocess.CompletedProcess, bucket: str, verb: str) -> str:
    """A failed `dvc push`/`dvc pull`: no traceback, one line per object naming its key in the bucket, then DVC's
    one-line summary."""
    last = one_line_error(result.stderr, f"ERROR: failed to {verb} data ")
    per_object = [line for line in result.stderr.splitlines() if line.startswith("ERROR: failed to transfer")]
    assert per_object and all(f"/{bucket}/" in line for line in per_object), result.stderr[-3000:]
    return last


def test_dvc_push_and_pull_ride_out_blips_fail_cleanly_past_their_retries_and_a_rerun_moves_only_the_missing(
    tmp_path, s3
):
    from tests.test_dvc_remote import DVC, _env

    rng = ledger.rng("object store: dvc")
    bucket = s3.bucket("faults-dvc")
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    # DVC's S3 client retries as the standard chain says: 2 attempts, so that an outage outlasts them in CI
    env = _env(tmp_path) | {"AWS_MAX_ATTEMPTS": "2"}

    def dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(DVC), *args], cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 or not check, f"dvc {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result

    subprocess.run(["git", "init", "-q"], cwd=project, env=env, check=True)
    files = {f"data/f{k:02d}.bin": rng.randbytes(DVC_FILE_BYTES) for k in range(DVC_FILES)}
    for name, data in files.items():
        (project / name).write_bytes(data)
    dvc("init", "-q")
    dvc("add", "-q", "data")
    objects = {md5: path.read_bytes() for md5, path in _cache(project).items()}
    assert len(objects) == DVC_FILES + 1  # the files and the folder's listing
    config = project / ".dvc" / "config"
    base = config.read_text()
    (project / ".dvc" / "config.local").write_text(f"['remote \"storage\"']\n    endpointurl = {s3.proxy.url}\n")
    figures = Counter(survived=0, lost=0, duplicated=0, resent=0, clean_failures=0)

    def remote(prefix: str) -> dict[str, bytes]:
        """The remote's objects (hash -> bytes), each verified against its content-addressed key."""
        found = {}
        for key in s3.keys(bucket, prefix):
            md5 = "".join(key.split("/")[-2:])
            found[md5] = s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert _md5(found[md5]) == md5.removesuffix(".dir"), key  # never a partial object
        return found

    def outcome(result: subprocess.CompletedProcess, plan, verb: str) -> None:
        if result.returncode == 0:  # a blip ridden out by the client's retries (their backoff is random)
            assert plan.blip, result.stderr[-3000:]
            figures["rode_out"] += 1
        else:
            _dvc_failure(result, bucket, verb)
            figures["clean_failures"] += 1

    push_trials = plans(rng, ledger.size(2, 10), after=(1, DVC_FILES - 8), blip_s=(0.2, 1.2))
    for n, plan in enumerate(push_trials):
        prefix = f"push{n}/"
        config.write_text(
            base + f"[core]\n    remote = storage\n['remote \"storage\"']\n    url = s3://{bucket}/{prefix}\n"
        )
        with Outage(s3.proxy, plan, lambda prefix=prefix: len(s3.keys(bucket, prefix))) as outage:
            first = dvc("push", "-j", "2", check=False)
        assert outage.hit is not None and outage.hit < len(objects), (plan, outage.hit)
        outcome(first, plan, "push")
        missing = len(objects) - len(remote(prefix))
        arrived = s3.versions(bucket, prefix)
        pushed = dvc("push", "-j", "2").stdout
        # DVC says "1 file pushed", "2 files pushed" (a CI trial once left exactly one object to push)
        said = f"{missing} file{'s' * (missing != 1)} pushed" if missing else "Everything is up to date"
        assert said in pushed, pushed
        versions = s3.versions(bucket, prefix)
        assert {k: versions[k] for k in arrived} == arrived  # the rerun sent none of what had arrived
        figures["lost"] += len(objects.keys() - remote(prefix).keys())
        # An object is duplicated when its key holds two contents; the same bytes PUT again under the same
        # content-addressed key is the S3 client retrying a PUT whose answer the outage swallowed (S3 PUTs are
        # at-least-once; a reader sees one object either way), counted apart as ``resent``.
        figures["duplicated"] += sum(len(set(tags)) - 1 for tags in versions.values())
        figures["resent"] += sum(len(tags) - len(set(tags)) for tags in versions.values())
        assert remote(prefix) == objects and not figures["lost"] and not figures["duplicated"]
        figures["survived"] += 1
    ledger.record("object store", "dvc push", trials=len(push_trials), **figures)

    figures = Counter(survived=0, lost=0, duplicated=0, clean_failures=0)
    pull_trials = plans(rng, ledger.size(2, 10), after=(1, DVC_FILES - 8), blip_s=(0.2, 1.2))
    for plan in pull_trials:  # from the last push trial's remote, complete
        shutil.rmtree(project / "data")
        shutil.rmtree(project / ".dvc" / "cache")
        with Outage(s3.proxy, plan, lambda: len(_cache(project))) as outage:
            first = dvc("pull", "-j", "2", check=False)
        assert outage.hit is not None and outage.hit < len(objects), (plan, outage.hit)
        outcome(first, plan, "pull")
        cached = _cache(project)
        assert all(_md5(p.read_bytes()) == md5.removesuffix(".dir") for md5, p in cached.items())  # no partial
        present = [p for p in (project / "data").glob("*")] if (project / "data").is_dir() else []
        assert all(p.read_bytes() == files[f"data/{p.name}"] for p in present)  # nothing half-written checked out
        stamps = {md5: (p.stat().st_ino, p.stat().st_mtime_ns) for md5, p in cached.items()}
        dvc("pull", "-j", "2")
        restored = {f"data/{p.name}": p.read_bytes() for p in (project / "data").glob("*")}
        figures["lost"] += sum(restored.get(name) != data for name, data in files.items())
        figures["duplicated"] += len(restored.keys() - files.keys())
        assert restored == files and not figures["lost"] and not figures["duplicated"]
        again = {md5: (p.stat().st_ino, p.stat().st_mtime_ns) for md5, p in _cache(project).items() if md5 in stamps}
        assert again == stamps  # what had arrived was not fetched again
        figures["survived"] += 1
    ledger.record("object store", "dvc pull", trials=len(pull_trials), **figures)
