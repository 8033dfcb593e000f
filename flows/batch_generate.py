"""Batch generation as a Prefect flow: JSONL jobs on S3 or local disk -> content-addressed clips + sidecars.

    python -m flows.batch_generate --jobs s3://bucket/jobs/job.jsonl --out s3://bucket/out/job
    python -m flows.batch_generate --jobs s3://bucket/jobs/ --out s3://bucket/out/   # every *.jsonl under it
    python -m flows.batch_generate ... --dask-workers 2          # a local Dask cluster
    python -m flows.batch_generate ... --dask-address tcp://scheduler:8786 --gpus-per-batch 1

Deployment entrypoint: ``flows/batch_generate.py:batch_generate`` (``prefect.yaml``). The work is the library's
(``seap_model.batch``); here are the orchestration parts: batch tasks that retry storage/network errors with
exponential backoff and jitter (and nothing else: a bad row is an error in ``errors.jsonl``, not a retry),
results that stay small (outcome rows, never audio), progress lines (items, items/s, ETA), a summary artifact,
and the task runner: one process (default) or Dask, with one pipeline loaded per worker process. Whether an item
is done is decided by its content-addressed output in storage, never by Prefect's result cache, so a batch
re-run on another worker after a crash skips what was written and makes the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import time
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, Field

from seap_model.batch.engine import open_pipeline, plan, run_batch
from seap_model.batch.jobs import Job, finish, read_job
from seap_model.batch.storage import StorageError, is_transient, open_storage
from seap_model.config import SamplingParams
from seap_model.errors import SeapError
from seap_model.fingerprint import code_fingerprint
from seap_model.flags import FlagError, add_model_flags, model_from_flags
from seap_model.progress import keep_credentials_out_of_logs


class Cluster(BaseModel):
    """Where the batches run: this process (no fields set), a local Dask cluster, or an existing scheduler."""

    dask_address: str | None = Field(None, description="tcp://host:8786 of a running Dask scheduler")
    dask_workers: int = Field(0, ge=0, description="start a local Dask cluster of this many worker processes")
    gpus_per_batch: int = Field(0, ge=0, description="Dask worker resource 'GPU' each batch holds (GPU workers)")
    torch_threads: int = Field(
        1,
        gt=0,
        description="CPU threads per batch; clips are byte-identical across runners only at the same count "
        "(float sums split differently over threads)",
    )


DEFAULT_SAMPLING, ONE_PROCESS = SamplingParams(), Cluster()


class _OneLineSeapErrors(logging.Filter):
    """Prefect logs a failed task's and flow's traceback; a SeapError's message already names what failed (the
    object S3 did not answer for, the job that cannot be read), so its record keeps the line and drops the trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SeapError):
            record.exc_info, record.exc_text = None, None
        return True


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    logging.getLogger(_name).addFilter(_OneLineSeapErrors())


def _transient(task, task_run, state) -> bool:
    """Retry only what may pass: lost connections, timeouts, 5xx and throttling from storage."""
    try:
        state.result()
    except Exception as exc:  # the state's own exception, classified below
        return is_transient(exc)
    return False


STORAGE_RETRIES = dict(
    retries=4,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=_transient,
    cache_policy=NO_CACHE,  # done-ness lives in storage (content-addressed outputs), not in Prefect's cache
    persist_result=False,
)


@task(name="read-job", **STORAGE_RETRIES)
def read_job_task(jobs_uri: str) -> Job:
    return read_job(jobs_uri)


@functools.lru_cache(maxsize=2)
def load_pipeline(path: str):
    """The pipeline at ``path`` and its hash, loaded once per process (one per Dask worker), on the GPU if the
    worker has one (Dask's CUDA_VISIBLE_DEVICES picks which); the noise stays on the CPU."""
    import torch

    pipe, model_hash = open_pipeline(path)
    if torch.cuda.is_available():
        pipe.to("cuda")
    return pipe, model_hash


@task(name="generate-batch", **STORAGE_RETRIES)
def generate_batch(
    pipeline: str, code_hash: str, job_storage: str, out_uri: str, batch: list, threads: int
) -> list[dict]:
    import torch

    keep_credentials_out_of_logs()  # a Dask worker process configures its own logging
    pipe, model_hash = load_pipeline(pipeline)
    provenance = {"model_sha256": model_hash, "code_sha256": code_hash}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return run_batch(pipe, provenance, open_storage(job_storage), open_storage(out_uri), batch)
    finally:
        torch.set_num_threads(before)


@task(name="finish-job", **STORAGE_RETRIES)
def finish_task(job: Job, out_uri: str, outcomes: list[dict], seconds: float) -> dict:
    return finish(job, out_uri, outcomes, seconds)


def _runner(cluster: Cluster):
    if cluster.dask_address or cluster.dask_workers:
        from prefect_dask import DaskTaskRunner

        if cluster.dask_address:
            return DaskTaskRunner(address=cluster.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": cluster.dask_workers, "threads_per_worker": 1})
    return ThreadPoolTaskRunner(max_workers=1)  # one process, one pipeline, batches one after another


def _resources(cluster: Cluster):
    if not cluster.gpus_per_batch:
        return contextlib.nullcontext()
    import dask

    return dask.annotate(resources={"GPU": cluster.gpus_per_batch})


@flow(name="seap-generate-job")
def generate_job(
    job_uri: str, out_uri: str, pipeline: str, batch_size: int, sampling: SamplingParams, cluster: Cluster
):
    """One job: plan its batches, run them (on the flow's task runner), then write errors, manifest, summary."""
    logger = get_run_logger()
    start = time.perf_counter()
    job = read_job_task(job_uri)
    # What made an output: the model (hashed where it is loaded) and the generate stage's code.
    code_hash = code_fingerprint("generate")
    batches = plan([item.request(sampling) for item in job.items], batch_size)
    total = sum(len(b) for b in batches)
    logger.info(
        "%s: %d rows, %d bad, %d batches -> %s",
        job_uri,
        total + len(job.errors),
        len(job.errors),
        len(batches),
        out_uri,
    )
    with _resources(cluster):
        futures = [
            generate_batch.submit(pipeline, code_hash, job.storage.uri, out_uri, b, cluster.torch_threads)
            for b in batches
        ]
    outcomes: list[dict] = []
    for future in as_completed(futures):
        outcomes += future.result()
        elapsed = time.perf_counter() - start
        rate = len(outcomes) / elapsed
        eta = (total - len(outcomes)) / rate if rate > 0 else float("nan")
        logger.info("%d/%d items (%.2f items/s, ETA %.0f s)", len(outcomes), total, rate, eta)
    summary = finish_task(job, out_uri, outcomes, time.perf_counter() - start)
    lines = {item.row.id: item.line for item in job.items}
    failures = [{**o, "line": lines[o["id"]]} for o in outcomes if o["status"] == "failed"] + [
        {"id": e["id"], "line": e["line"], "reason": e["reason"]} for e in job.errors
    ]
    rows = "\n".join(
        f"| {f['line']} | {f['id']} | {f['reason'][:200]} |" for f in sorted(failures, key=lambda f: f["line"])
    )
    create_markdown_artifact(
        key="seap-batch-summary",
        markdown=(
            f"**{job_uri}** -> {out_uri}\n\n"
            + "| generated | skipped | failed | bad rows | s | generated/s |\n|---|---|---|---|---|---|\n"
            + f"| {summary['generated']} | {summary['skipped']} | {summary['failed']} | {summary['bad_rows']} "
            + f"| {summary['seconds']} | {summary['generated_per_second']} |\n\n"
            + ("| line | id | reason |\n|---|---|---|\n" + rows + "\n" if failures else "")
        ),
        description=f"batch generation of {job_uri}",
    )
    return summary


def list_jobs(prefix_uri: str) -> list[str]:
    """Every ``*.jsonl`` under a jobs prefix (s3://bucket/prefix/ or a folder), as URIs."""
    storage = open_storage(prefix_uri)
    return [f"{storage.uri.rstrip('/')}/{k}" for k in storage.list() if k.endswith(".jsonl")]


@flow(name="seap-batch-generate")
def batch_generate(
    jobs_uri: str,
    out_uri: str,
    pipeline: str = "models/pipeline",
    batch_size: Annotated[int, Field(gt=0, le=256)] = 8,
    sampling: SamplingParams = DEFAULT_SAMPLING,
    cluster: Cluster = ONE_PROCESS,
) -> dict:
    """Generate a job (``jobs_uri`` ends in ``.jsonl``) into ``out_uri``, or every job under a jobs prefix into
    ``out_uri/<job name>/`` (what the scheduled deployment polls). ``sampling``: the settings of every row that
    does not set its own (a row may set steps, guidance, text_guidance, style_guidance, scheduler, duration and
    seed; ``duration`` None: the pipeline's own clip length). Returns the job's summary, or one per job
    for a prefix. Re-running skips every finished item."""
    keep_credentials_out_of_logs()  # even under a DEBUG root logger (PREFECT_LOGGING_ROOT_LEVEL=DEBUG)
    single = jobs_uri.endswith(".jsonl")
    jobs = [jobs_uri] if single else list_jobs(jobs_uri)
    runner = _runner(cluster)
    results = {}
    for uri in jobs:
        out = out_uri if single else f"{out_uri.rstrip('/')}/{uri.rsplit('/', 1)[-1].removesuffix('.jsonl')}"
        results[uri] = generate_job.with_options(task_runner=runner)(uri, out, pipeline, batch_size, sampling, cluster)
    if not jobs:
        get_run_logger().info("no *.jsonl job under %s", jobs_uri)
    return results[jobs_uri] if single else results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flows.batch_generate", description="seap batch generation (a Prefect flow)"
    )
    p.add_argument("--jobs", required=True, help="a job (.jsonl) or a jobs prefix, s3:// or local")
    p.add_argument("--out", required=True, help="output prefix, s3:// or local")
    p.add_argument("--pipeline", default="models/pipeline")
    p.add_argument("--batch-size", type=int, default=8)
    add_model_flags(p.add_argument_group("sampling (rows that do not set their own)"), SamplingParams)
    p.add_argument("--dask-address")
    p.add_argument("--dask-workers", type=int, default=0)
    p.add_argument("--gpus-per-batch", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=1, help="CPU threads per batch")
    return p


def main(argv: list[str] | None = None) -> None:
    p = build_parser()
    a = p.parse_args(argv)
    try:
        sampling = model_from_flags(a, SamplingParams)
    except FlagError as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    cluster = Cluster(
        dask_address=a.dask_address,
        dask_workers=a.dask_workers,
        gpus_per_batch=a.gpus_per_batch,
        torch_threads=a.torch_threads,
    )
    try:
        summary = batch_generate(a.jobs, a.out, a.pipeline, a.batch_size, sampling, cluster)
    except StorageError as exc:  # a job that cannot be read, or storage gone past the retries: one line naming it
        p.exit(1, f"{p.prog}: error: {exc}\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
