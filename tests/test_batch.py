"""S3-backed batch generation (seap_model/batch, flows/batch_generate.py) against a real S3 server process.

moto runs in server mode in its own process; boto3 reaches it through ``AWS_ENDPOINT_URL`` (its standard chain),
directly or through a TCP proxy that the outage test takes down and brings back. The model is the tiny random
pipeline, saved and loaded like a trained one; clips are 0.5 s at 2 sampling steps.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from flows.batch_generate import Cluster, batch_generate, build_parser, load_pipeline, main
from seap_model.batch.engine import plan
from seap_model.batch.jobs import ROW_SAMPLING, JobRow, parse_job
from seap_model.batch.storage import LocalStorage, S3Storage, UnsafeKey, safe_key
from seap_model.config import SamplingParams
from tests.conftest import make_tiny_pipeline, tone
from tests.s3server import DUMMY_CREDENTIALS, batch_outputs, s3_bucket
from tests.tcpproxy import Proxy

BUCKET = "seap-jobs"
# fp32 spelled out: Dask's worker processes resolve `auto` for real (bf16 on a CPU with native bf16), while the
# in-process runs resolve it as fp32 (conftest); the same explicit precision gives the same bytes anywhere.
SAMPLING = SamplingParams(steps=2, guidance=3.0, duration=0.5, precision="fp32")


@pytest.fixture(scope="module")
def s3():
    """(endpoint, client): a moto server for this module, with dummy credentials in the environment."""
    with s3_bucket(BUCKET) as server:
        yield server


@pytest.fixture(scope="module")
def pipeline_dir(tiny_text, tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe") / "pipeline"
    make_tiny_pipeline(tiny_text).save_pretrained(path)
    return str(path)


def _wav(seconds: float, freq: float) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, freq=freq).numpy(), 16000, format="WAV")
    return buf.getvalue()


def write_job(client, name: str, shuffle: int | None = None) -> tuple[str, set[str]]:
    """A 20-row job: 16 good rows, 3 bad rows and 1 row whose reference is missing; returns (uri, good ids)."""
    for i in range(4):
        client.put_object(Bucket=BUCKET, Key=f"jobs/refs/ref{i}.wav", Body=_wav(1.0, 300.0 + 200 * i))
    rows = [
        json.dumps(
            {
                "id": f"item{i:02d}",
                "prompt": ["a dog barking", "a bell ringing"][i % 2],
                "reference": f"refs/ref{i % 4}.wav",
            }
        )
        for i in range(16)
    ]
    rows[3] = json.dumps({**json.loads(rows[3]), "seed": 7, "format": "flac"})
    rows += [
        '{"id": "bad-json", "prompt": "a dog"',  # not JSON
        json.dumps({"id": "empty-prompt", "prompt": "  ", "reference": "refs/ref0.wav"}),
        json.dumps({"id": "bad-steps", "prompt": "a dog barking", "reference": "refs/ref0.wav", "steps": 0}),
        json.dumps({"id": "missing-ref", "prompt": "a dog barking", "reference": "refs/nope.wav"}),
    ]
    if shuffle is not None:
        random.Random(shuffle).shuffle(rows)
    client.put_object(Bucket=BUCKET, Key=f"jobs/{name}.jsonl", Body="\n".join(rows).encode())
    return f"s3://{BUCKET}/jobs/{name}.jsonl", {f"item{i:02d}" for i in range(16)}


def errors(client, prefix: str) -> list[dict]:
    body = client.get_object(Bucket=BUCKET, Key=f"{prefix}/errors.jsonl")["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines()]


# ---------------------------------------------------------------- the job format


def test_hostile_references_are_refused_naming_line_and_field():
    storage = S3Storage(BUCKET)
    lines = [
        {"id": "up", "prompt": "p", "reference": "../secrets/ref.wav"},
        {"id": "deep-up", "prompt": "p", "reference": "refs/../../x.wav"},
        {"id": "abs", "prompt": "p", "reference": "/etc/passwd"},
        {"id": "other-bucket", "prompt": "p", "reference": "s3://someone-else/ref.wav"},
        {"id": "url", "prompt": "p", "reference": "https://evil.example/ref.wav"},
        {"id": "ok-same-bucket", "prompt": "p", "reference": f"s3://{BUCKET}/shared/ref.wav"},
        {"id": "ok-relative", "prompt": "p", "reference": "refs/ref.wav"},
        {"id": "../escape", "prompt": "p", "reference": "refs/ref.wav"},
        {"id": "extra", "prompt": "p", "reference": "refs/ref.wav", "colour": "red"},
    ]
    job = parse_job("\n".join(json.dumps(r) for r in lines), "s3://seap-jobs/jobs/j.jsonl", storage, "jobs/j.jsonl")
    assert {i.row.id: i.reference_key for i in job.items} == {
        "ok-same-bucket": "shared/ref.wav",
        "ok-relative": "jobs/refs/ref.wav",
    }
    reasons = {e["line"]: e["reason"] for e in job.errors}
    assert set(reasons) == {1, 2, 3, 4, 5, 8, 9}
    assert "jobs/j.jsonl:1: reference:" in reasons[1] and "'..'" in reasons[1]
    assert "'..'" in reasons[2] and "absolute path" in reasons[3]
    assert "outside the job's bucket" in reasons[4] and "other hosts" in reasons[5]
    assert ":8: id:" in reasons[8] and ":9: colour:" in reasons[9]
    # a local job: the same rules, paths under the job's folder
    local = parse_job(
        json.dumps(lines[6]) + "\n" + json.dumps(lines[3]), "/jobs/j.jsonl", LocalStorage("/jobs"), "j.jsonl"
    )
    assert [i.reference_key for i in local.items] == ["refs/ref.wav"]
    assert "needs a job on S3" in local.errors[0]["reason"]
    for bad in ("..", "a/../../b", "/abs", "C:/x", "http://h/x"):
        with pytest.raises(UnsafeKey):
            safe_key(bad)


def test_batches_do_not_depend_on_row_order_and_share_their_settings():
    rows = [JobRow(id=f"i{n}", prompt="p", reference="r.wav", steps=2 + n % 2) for n in range(7)]
    storage = S3Storage(BUCKET)
    job = parse_job("\n".join(r.model_dump_json() for r in rows), "s3://b/j.jsonl", storage, "j.jsonl")
    shuffled = list(job.items)
    random.Random(0).shuffle(shuffled)
    a = [[r.id for r in b] for b in plan([i.request(SamplingParams()) for i in job.items], 2)]
    b = [[r.id for r in b] for b in plan([i.request(SamplingParams()) for i in shuffled], 2)]
    assert a == b
    for batch in plan([i.request(SamplingParams()) for i in job.items], 2):
        assert len({r.sampling.steps for r in batch}) == 1 and len(batch) <= 2


def test_a_row_sets_the_sampling_fields_it_may_with_their_own_constraints():
    """JobRow's overrides are SamplingParams' fields (type, bounds, choices), not a copy; unset ones are the job's."""
    for name in ROW_SAMPLING:
        row, params = JobRow.model_fields[name], SamplingParams.model_fields[name]
        assert row.metadata == params.metadata and row.default is None, name
    assert set(JobRow.model_fields) == {"id", "prompt", "reference", "format", *ROW_SAMPLING}
    bad = {"steps": 1001, "guidance": -1, "duration": 61, "seed": -1, "scheduler": "plms", "precision": "bf16"}
    lines = [
        json.dumps({"id": f"r{n}", "prompt": "p", "reference": "r.wav", k: v}) for n, (k, v) in enumerate(bad.items())
    ]
    lines.append(json.dumps({"id": "ok", "prompt": "p", "reference": "r.wav", "steps": 3, "seed": 9}))
    job = parse_job("\n".join(lines), "/j.jsonl", LocalStorage("/jobs"), "j.jsonl")
    reasons = [e["reason"] for e in job.errors]
    assert [r.split(": ")[1] for r in reasons] == list(bad)  # each names its field
    assert "less than or equal to 1000" in reasons[0] and "unknown" not in reasons[5]
    defaults = SamplingParams(steps=5, guidance=2.0, seed=1, precision="bf16")
    (ok,) = job.items
    assert ok.request(defaults).sampling == defaults.model_copy(update={"steps": 3, "seed": 9})


# ---------------------------------------------------------------- the flow against S3


def test_job_with_bad_rows_gives_16_outputs_4_errors_and_a_shuffled_job_the_same_bytes(
    s3, pipeline_dir, prefect_harness
):
    _, client = s3
    job, good = write_job(client, "job-a")
    summary = batch_generate(job, f"s3://{BUCKET}/out/a", pipeline_dir, 4, SAMPLING)
    assert (summary["generated"], summary["failed"], summary["bad_rows"]) == (16, 1, 3)
    got = batch_outputs(client, BUCKET, "out/a/")
    assert set(got) == good
    errs = errors(client, "out/a")
    assert [e["line"] for e in errs] == [17, 18, 19, 20]
    assert "not JSON" in errs[0]["reason"] and "prompt: Value error, is empty" in errs[1]["reason"]
    assert "steps:" in errs[2]["reason"] and "no such key" in errs[3]["reason"] and errs[3]["id"] == "missing-ref"
    # each output says what made it: this row's prompt and this row's reference bytes
    for key in (o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="out/a/item")["Contents"]):
        if key.endswith(".json"):
            side = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            n = int(side["id"][4:])
            ref = client.get_object(Bucket=BUCKET, Key=f"jobs/refs/ref{n % 4}.wav")["Body"].read()
            import hashlib

            assert side["reference_sha256"] == hashlib.sha256(ref).hexdigest()
            assert side["prompt"] == ["a dog barking", "a bell ringing"][n % 2]
            sampling = side["sampling"]
            assert sampling["steps"] == 2 and sampling["duration"] == 0.5 and sampling["seed"] == (7 if n == 3 else 0)
    assert sf.info(io.BytesIO(got["item03"])).format == "FLAC" and sf.info(io.BytesIO(got["item00"])).format == "WAV"
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key="out/a/manifest.json")["Body"].read())
    assert set(manifest["outputs"]) == good and len(manifest["errors"]) == 4

    shuffled, _ = write_job(client, "job-b", shuffle=3)
    batch_generate(shuffled, f"s3://{BUCKET}/out/b", pipeline_dir, 4, SAMPLING)
    other = batch_outputs(client, BUCKET, "out/b/")
    assert set(other) == good and all(other[i] == got[i] for i in good)  # byte-identical per id
    assert len({got[i] for i in good}) == len(good)  # and not all the same clip


def test_s3_outage_mid_batch_then_rerun_completes_each_item_once_and_never_shows_partial_objects(
    s3, pipeline_dir, prefect_harness, monkeypatch
):
    endpoint, client = s3
    job, good = write_job(client, "job-outage")
    proxy = Proxy(int(endpoint.rsplit(":", 1)[1])).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)  # the flow reaches S3 only through the proxy
    seen_partial: list[str] = []
    outage_at: list[int] = []  # objects in the output prefix when S3 went away
    lengths: set[int] = set()  # every audio object seen, decoded: one length (0.5 s clips), never a truncated one
    stop = threading.Event()

    def watch() -> None:  # lists the bucket directly while the flow runs
        while not stop.is_set():
            listed = client.list_objects_v2(Bucket=BUCKET, Prefix="out/outage/").get("Contents", [])
            for o in listed:
                body = client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
                if o["Key"].endswith((".wav", ".flac")):
                    try:
                        lengths.add(len(sf.read(io.BytesIO(body))[0]))
                    except Exception:  # undecodable audio is a partial object
                        seen_partial.append(o["Key"])
                elif o["Key"].endswith(".json") and "manifest" not in o["Key"] and "summary" not in o["Key"]:
                    sidecar = json.loads(body)
                    head = client.list_objects_v2(Bucket=BUCKET, Prefix=f"out/outage/{sidecar['audio']}")
                    if not head.get("KeyCount"):
                        seen_partial.append(o["Key"])  # a marker without its audio
            time.sleep(0.05)

    def outage() -> None:  # take S3 away once the first outputs exist, bring it back 4 s later
        while not stop.is_set() and not client.list_objects_v2(Bucket=BUCKET, Prefix="out/outage/").get("KeyCount"):
            time.sleep(0.02)
        outage_at.append(len(client.list_objects_v2(Bucket=BUCKET, Prefix="out/outage/").get("Contents", [])))
        proxy.stop()
        time.sleep(4)
        proxy.start()

    threads = [threading.Thread(target=watch, daemon=True), threading.Thread(target=outage, daemon=True)]
    for t in threads:
        t.start()
    try:
        first = batch_generate(job, f"s3://{BUCKET}/out/outage", pipeline_dir, 2, SAMPLING)
    except Exception as exc:  # failing cleanly is allowed: the re-run must finish the job
        first = {"failed_with": repr(exc)}
    finally:
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert not seen_partial, seen_partial
    assert len(lengths) == 1 and min(lengths) > 0, lengths
    assert outage_at and 0 < outage_at[0] < 32, outage_at  # S3 went away mid-batch, with outputs still to come
    rerun = batch_generate(job, f"s3://{BUCKET}/out/outage", pipeline_dir, 2, SAMPLING)
    assert set(batch_outputs(client, BUCKET, "out/outage/")) == good, (first, rerun)
    audio = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="out/outage/item")["Contents"]]
    assert len([k for k in audio if k.endswith((".wav", ".flac"))]) == 16  # each good item exactly once
    assert rerun["generated"] + rerun["skipped"] == 16
    before = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="out/outage/")["Contents"]}
    again = batch_generate(job, f"s3://{BUCKET}/out/outage", pipeline_dir, 2, SAMPLING)
    after = {
        o["Key"]: (o["ETag"], o["LastModified"])
        for o in client.list_objects_v2(Bucket=BUCKET, Prefix="out/outage/")["Contents"]
    }
    assert again["generated"] == 0 and again["uploaded"] is False
    assert {k: v[0] for k, v in after.items()} == before  # nothing uploaded
    proxy.stop()


def test_only_storage_and_network_errors_are_retried():
    from botocore.exceptions import ClientError, EndpointConnectionError

    from flows.batch_generate import _transient
    from seap_model.batch.storage import MissingObject, StorageUnavailable, is_transient

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(client_error("InternalError", 500)) and is_transient(client_error("SlowDown", 503))
    assert not is_transient(client_error("AccessDenied", 403)) and not is_transient(MissingObject("gone"))
    assert not is_transient(ValueError("a bug"))
    assert is_transient(StorageUnavailable("s3://b/k: cannot write (EndpointConnectionError: ...)"))  # still retried

    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self):
            raise self.exc

    assert _transient(None, None, State(client_error("InternalError", 500)))
    assert not _transient(None, None, State(KeyError("x")))


def test_storage_gone_past_its_retries_is_one_line_naming_the_object(monkeypatch):
    import socket

    from seap_model.batch.storage import StorageUnavailable

    with socket.socket() as s:  # a port nothing listens on: S3 gone
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {**DUMMY_CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the standard chain's setting: no retry inside botocore
    storage = S3Storage(BUCKET, "out/gone")
    with pytest.raises(StorageUnavailable, match=rf"^s3://{BUCKET}/out/gone/a\.wav: cannot write \(EndpointConn"):
        storage.write("a.wav", b"audio")
    with pytest.raises(StorageUnavailable, match=rf"^s3://{BUCKET}/out/gone/a\.json: cannot read") as failed:
        storage.read("a.json")
    assert "\n" not in str(failed.value)


def test_dask_local_cluster_gives_the_sequential_runs_bytes(s3, pipeline_dir, prefect_harness):
    _, client = s3
    job, good = write_job(client, "job-dask")
    batch_generate(job, f"s3://{BUCKET}/out/seq", pipeline_dir, 4, SAMPLING)
    summary = batch_generate(job, f"s3://{BUCKET}/out/dask", pipeline_dir, 4, SAMPLING, Cluster(dask_workers=2))
    assert summary["generated"] == 16
    seq, dask = batch_outputs(client, BUCKET, "out/seq/"), batch_outputs(client, BUCKET, "out/dask/")
    assert set(dask) == good and all(dask[i] == seq[i] for i in good)


def test_a_local_job_through_the_flow_reruns_only_what_changed(tmp_path, pipeline_dir, prefect_harness):
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "dog.wav").write_bytes(_wav(1.0, 500.0))
    rows = [{"id": f"x{i}", "prompt": "a dog barking", "reference": "refs/dog.wav", "seed": i} for i in range(3)]
    job, out = tmp_path / "job.jsonl", tmp_path / "out"
    job.write_text("\n".join(json.dumps(r) for r in rows))
    summary = batch_generate(str(job), str(out), pipeline_dir, 2, SAMPLING)
    assert summary["generated"] == 3 and summary["errors"] == 0
    clips = sorted(out.glob("x*.wav"))
    assert len(clips) == 3 and len({c.read_bytes() for c in clips}) == 3  # per-item seeds
    assert np.isfinite(sf.read(clips[0])[0]).all()
    again = batch_generate(str(job), str(out), pipeline_dir, 2, SAMPLING)
    assert again["skipped"] == 3 and again["uploaded"] is False

    rows[1]["steps"] = 3  # one row changed: that item alone is made again, its old output removed
    job.write_text("\n".join(json.dumps(r) for r in rows))
    changed = batch_generate(str(job), str(out), pipeline_dir, 2, SAMPLING)
    assert (changed["generated"], changed["skipped"], changed["uploaded"]) == (1, 2, True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.glob("x*")) == sorted(
        name for audio in manifest["outputs"].values() for name in (audio, audio.replace(".wav", ".json"))
    )
    assert json.loads((out / manifest["outputs"]["x1"].replace(".wav", ".json")).read_text())["sampling"]["steps"] == 3


def test_command_line_runs_a_local_job_through_the_flow(tmp_path, pipeline_dir, prefect_harness, capsys):
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "bell.wav").write_bytes(_wav(1.0, 900.0))
    rows = [
        {"id": "b1", "prompt": "a bell ringing", "reference": "refs/bell.wav"},
        {"id": "b2", "prompt": "a bell ringing", "reference": "../outside.wav"},
    ]
    (tmp_path / "job.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    args = ["--jobs", str(tmp_path / "job.jsonl"), "--out", str(tmp_path / "out"), "--pipeline", pipeline_dir]
    main([*args, "--steps", "2", "--duration", "0.5", "--batch-size", "2"])
    summary = json.loads(capsys.readouterr().out)
    assert (summary["generated"], summary["bad_rows"]) == (1, 1)
    assert "'..'" in (tmp_path / "out" / "errors.jsonl").read_text()
    assert len(list((tmp_path / "out").glob("b1-*.wav"))) == 1


def test_every_sampling_field_is_a_flow_flag_and_a_flow_parameter():
    from prefect.utilities.callables import parameter_schema

    from seap_model.flags import flag_name

    flags = {a.dest: a for a in build_parser()._actions}
    schema = parameter_schema(batch_generate.fn).model_dump()
    sampling = schema["definitions"]["SamplingParams"]["properties"]
    for name, info in SamplingParams.model_fields.items():  # a field added to SamplingParams is in both
        assert flags[name].option_strings == [flag_name(name)] and info.description in flags[name].help
        assert name in sampling, name
    assert schema["properties"]["sampling"]["$ref"].endswith("/SamplingParams")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps", "0"], "--steps: Input should be greater than 0"),
        (["--guidance", "-1"], "--guidance: Input should be greater than or equal to 0"),
    ],
)
def test_a_refused_flow_flag_is_one_line_naming_it_and_exit_2(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as done:
        main(["--jobs", str(tmp_path / "job.jsonl"), "--out", str(tmp_path / "out"), *flags])
    assert done.value.code == 2
    assert capsys.readouterr().err.strip() == f"python -m flows.batch_generate: error: {message}"


def test_every_named_sampler_makes_finite_audio_of_the_requested_length(
    tmp_path, pipeline_dir, prefect_harness, capsys
):
    """One row per sampler, through the command line users run (the flow, its batches, the engine)."""
    from seap_model.samplers import SAMPLERS

    (tmp_path / "dog.wav").write_bytes(_wav(1.0, 500.0))
    rows = [{"id": n, "prompt": "a dog barking", "reference": "dog.wav", "scheduler": n, "steps": 3} for n in SAMPLERS]
    (tmp_path / "job.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    args = ["--jobs", str(tmp_path / "job.jsonl"), "--out", str(tmp_path / "out"), "--pipeline", pipeline_dir]
    main([*args, "--steps", "2", "--guidance", "3", "--duration", "0.5"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["generated"] == len(SAMPLERS)
    clips = {p.stem.rsplit("-", 1)[0]: sf.read(p)[0] for p in (tmp_path / "out").glob("*.wav")}  # <id>-<hash>
    assert set(clips) == set(SAMPLERS)
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*-*.json")]
    assert sorted(s["sampling"]["scheduler"] for s in sidecars) == sorted(SAMPLERS)
    assert {s["sampling"]["steps"] for s in sidecars} == {3}  # the rows' own steps over the job's
    lengths = {len(c) for c in clips.values()}
    pipe = load_pipeline(pipeline_dir)[0]
    direct = pipe("a dog barking", tone(1.0), duration=0.5, num_inference_steps=2, progress=False).audios
    assert lengths == {direct.shape[-1]} and abs(direct.shape[-1] / 16000 - 0.5) < 0.05  # 0.5 s, to codec frames
    assert all(np.isfinite(c).all() and np.abs(c).max() > 0 for c in clips.values())
    assert len({c.tobytes() for c in clips.values()}) == len(SAMPLERS)  # each sampler is really used
