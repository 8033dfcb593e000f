"""prefect.yaml end to end: a real Prefect server, `prefect deploy --all`, a process worker and a batch run.

Everything runs on 127.0.0.1 in subprocesses: a moto S3 server (tests/s3server.py), `prefect server start` with
its own PREFECT_HOME, `prefect work-pool create`, `prefect deploy` of the repo's prefect.yaml, `prefect worker
start` and `prefect deployment run`, the commands the README gives. The run the worker spawns reaches moto only
through boto3's standard environment (AWS_ENDPOINT_URL and dummy credentials in the worker's environment), and
generates a 4-row job (one bad row) with the tiny random pipeline. Both schedules are paused right after
deploying, so no scheduled run fires during the test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import soundfile as sf

from tests.conftest import make_tiny_pipeline, tone
from tests.s3server import DUMMY_CREDENTIALS, batch_outputs, moto_server, stop_process

REPO = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]
BUCKET = "seap-jobs"
HOST = "127.0.0.1"
SERVER_DEADLINE_S = 120
RUN_DEADLINE_S = 240
BATCH, NIGHTLY = "seap-batch-generate/batch-generate", "seap-pipeline/nightly"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wav(seconds: float, freq: float) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, freq=freq).numpy(), 16000, format="WAV")
    return buf.getvalue()


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def _cli(env: dict, *args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [*PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _write_job(client) -> str:
    """A 4-row job in S3: 3 good rows over 2 references and an empty prompt on line 3."""
    for i in range(2):
        client.put_object(Bucket=BUCKET, Key=f"jobs/refs/ref{i}.wav", Body=_wav(1.0, 300.0 + 200 * i))
    rows = [
        {"id": "dog", "prompt": "a dog barking", "reference": "refs/ref0.wav"},
        {"id": "bell", "prompt": "a bell ringing", "reference": "refs/ref1.wav"},
        {"id": "empty-prompt", "prompt": "  ", "reference": "refs/ref0.wav"},
        {"id": "rain", "prompt": "rain on a roof", "reference": "refs/ref1.wav", "seed": 3},
    ]
    client.put_object(Bucket=BUCKET, Key="jobs/deploy.jsonl", Body="\n".join(map(json.dumps, rows)).encode())
    return f"s3://{BUCKET}/jobs/deploy.jsonl"


def test_prefect_yaml_deploys_and_a_process_worker_runs_a_batch_job_into_s3(tmp_path, tiny_text):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_URL, temporary_settings

    pipeline = tmp_path / "pipeline"
    make_tiny_pipeline(tiny_text).save_pretrained(pipeline)
    port = _free_port()
    api = f"http://{HOST}:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "SEAP_"))}
    env = {
        **base,
        "PREFECT_HOME": str(tmp_path / "prefect_home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    server = worker = None
    prefect_yaml = (REPO / "prefect.yaml").read_bytes()
    started = time.monotonic()
    with moto_server() as endpoint, temporary_settings(updates={PREFECT_API_URL: api}):
        s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
        s3.create_bucket(Bucket=BUCKET)
        job = _write_job(s3)
        out = f"s3://{BUCKET}/out/deploy"
        try:
            with server_log.open("w") as log:
                server = subprocess.Popen(
                    [*PREFECT, "server", "start", "--host", HOST, "--port", str(port)],
                    cwd=tmp_path,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + SERVER_DEADLINE_S
            while True:
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                    if r.status == 200:
                        break
                assert server.poll() is None, f"prefect server exited {server.returncode}:\n{_tail(server_log)}"
                assert time.monotonic() < deadline, f"no /api/health after {SERVER_DEADLINE_S}s:\n{_tail(server_log)}"
                time.sleep(0.5)

            _cli(env, "work-pool", "create", "seap-process", "--type", "process")
            _cli(env, "--no-prompt", "deploy", "--all")  # SEAP_PROJECT_DIR unset: the pull step keeps "{{ $...}}"
            with get_client(sync_client=True) as client:
                deployments = {name: client.read_deployment_by_name(name) for name in (BATCH, NIGHTLY)}
                for d in deployments.values():  # no scheduled run fires during the test; pausing drops planned ones
                    for schedule in d.schedules:
                        client.update_deployment_schedule(d.id, schedule.id, active=False)

            worker_env = {
                **env,
                **DUMMY_CREDENTIALS,
                "AWS_ENDPOINT_URL": endpoint,
                "SEAP_PROJECT_DIR": str(REPO),  # the checkout the pull step changes into, read when the run starts
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_WORKER_PREFETCH_SECONDS": "1",
            }
            with worker_log.open("w") as log:
                worker = subprocess.Popen(
                    [*PREFECT, "worker", "start", "--pool", "seap-process", "--name", "test-worker"],
                    cwd=tmp_path,  # the flow run changes into SEAP_PROJECT_DIR in its pull step
                    env=worker_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            params = {
                "jobs_uri": job,
                "out_uri": out,
                "pipeline": str(pipeline),
                "batch_size": 2,
                "sampling": {"steps": 2, "guidance": 3.0, "duration": 0.5},
            }
            ran = _cli(env, "deployment", "run", BATCH, "--params", json.dumps(params))
            match = re.search(r"UUID: ([0-9a-f-]{36})", ran)
            assert match, ran
            deadline = time.monotonic() + RUN_DEADLINE_S
            with get_client(sync_client=True) as client:
                while True:
                    run = client.read_flow_run(match.group(1))
                    state = run.state.type.value if run.state else "PENDING"
                    if state in FINAL:
                        break
                    assert worker.poll() is None, f"worker exited {worker.returncode}:\n{_tail(worker_log)}"
                    assert time.monotonic() < deadline, (
                        f"flow run still {run.state.name if run.state else state} after {RUN_DEADLINE_S}s\n"
                        f"--- worker\n{_tail(worker_log)}\n--- server\n{_tail(server_log)}"
                    )
                    time.sleep(1)
                assert state == "COMPLETED", (
                    f"flow run {run.state.name}: {run.state.message}\n"
                    f"--- worker\n{_tail(worker_log)}\n--- server\n{_tail(server_log)}"
                )
                assert run.parameters["pipeline"] == str(pipeline) and run.parameters["sampling"]["steps"] == 2
                deployments = {name: client.read_deployment_by_name(name) for name in (BATCH, NIGHTLY)}
                others = [
                    r.id
                    for d in deployments.values()
                    for r in client.read_flow_runs(limit=20)
                    if r.deployment_id == d.id and str(r.id) != match.group(1)
                ]
                assert not others, f"runs nobody asked for: {others}"
        finally:
            stop_process(worker)
            stop_process(server)

        # the outputs: audio + sidecar per good row, errors.jsonl with the bad row's line, a manifest
        got = batch_outputs(s3, BUCKET, "out/deploy/")
        assert set(got) == {"dog", "bell", "rain"}, got.keys()
        assert all(abs(sf.info(io.BytesIO(audio)).duration - 0.5) < 0.05 for audio in got.values())
        errors = s3.get_object(Bucket=BUCKET, Key="out/deploy/errors.jsonl")["Body"].read().decode().splitlines()
        assert len(errors) == 1 and json.loads(errors[0])["line"] == 3 and json.loads(errors[0])["id"] == "empty-prompt"
        manifest = json.loads(s3.get_object(Bucket=BUCKET, Key="out/deploy/manifest.json")["Body"].read())
        assert set(manifest["outputs"]) == {"dog", "bell", "rain"} and len(manifest["errors"]) == 1

    # the deployments as prefect.yaml declares them: cron schedules (paused here), one run at a time, the pull step
    batch, nightly = deployments[BATCH], deployments[NIGHTLY]
    for d, cron in ((batch, "*/15 * * * *"), (nightly, "0 3 * * *")):
        assert len(d.schedules) == 1, d.schedules
        schedule = d.schedules[0]
        assert isinstance(schedule.schedule, CronSchedule), schedule.schedule
        assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (cron, "UTC", False)
        assert d.global_concurrency_limit is not None and d.global_concurrency_limit.limit == 1, d.name
        assert d.work_pool_name == "seap-process"
        assert d.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $SEAP_PROJECT_DIR }}"}}
        ], d.pull_steps
    assert batch.entrypoint == "flows/batch_generate.py:batch_generate"
    assert batch.parameters == {
        "jobs_uri": "s3://seap-jobs/incoming/",
        "out_uri": "s3://seap-jobs/generated/",
        "pipeline": "models/pipeline",
    }
    assert nightly.entrypoint == "flows/pipeline.py:pipeline" and nightly.parameters == {"params_path": "params.yaml"}
    assert (REPO / "prefect.yaml").read_bytes() == prefect_yaml  # deploying never rewrites the project file
    assert time.monotonic() - started < 300


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": DUMMY_CREDENTIALS["AWS_DEFAULT_REGION"],
    }
