"""Prefect tasks: one per registry stage (same name), each a thin call of the library function behind it.

Caching makes the flow decide like ``dvc repro``: a task's cache key is its stage's input fingerprint (code,
params it reads, content of its data deps) together with the current content of its outputs. A cached result
is only ever written *after* a run, under the key of the outputs that run produced, so a hit means "these
inputs made exactly the outputs that are there now". A deleted or modified output, or any changed input,
misses and reruns the stage; content, not timestamps or Prefect state, decides. The library's log records go
to the task's Prefect logger (the UI shows them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefect import Task, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.results import get_result_store
from prefect.tasks import exponential_backoff

from seap_model.config import Params
from seap_model.fingerprint import outputs_fingerprint, stage_fingerprint
from seap_model.progress import quiet_library_bars
from seap_model.stages import STAGES, Stage, run

LIBRARY_LOGGER = "seap_model"


def stage_key(name: str, params: Params, fingerprint: Mapping[str, str] | None = None) -> str:
    """The cache key of stage ``name`` now: its input fingerprint (``fingerprint``, when the caller has computed
    it already) and the content of its outputs."""
    inputs = stage_fingerprint(name, params) if fingerprint is None else dict(fingerprint)
    state = {"stage": name, "inputs": inputs, "outputs": outputs_fingerprint(name, params)}
    return f"seap-{name}-" + hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


@dataclass
class StageCache(CachePolicy):
    """Hit only if a run with these inputs left exactly the outputs that exist now (see the module docstring)."""

    stage: str = ""

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        key = stage_key(self.stage, inputs["params"])
        # No key on a miss: Prefect then records nothing for the state the outputs were in *before* the run.
        return key if task_ctx.result_store.exists(key) else None


@contextlib.contextmanager
def library_logs_to_prefect():
    """Send ``seap_model`` log records through Prefect's handlers while a task runs (what
    ``PREFECT_LOGGING_EXTRA_LOGGERS=seap_model`` does, without every deployment having to set it)."""
    library = logging.getLogger(LIBRARY_LOGGER)
    added = [h for h in logging.getLogger("prefect.extra").handlers if h not in library.handlers]
    level = library.level
    for handler in added:
        library.addHandler(handler)
    if level == logging.NOTSET:
        library.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in added:
            library.removeHandler(handler)
        library.setLevel(level)


def _flat(metrics: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested metrics as (dotted key, value) rows, the way ``dvc metrics show`` names them."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows += _flat(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def metrics_markdown(metrics: dict) -> str:
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in _flat(metrics))
    return "| metric | value |\n|---|---|\n" + rows + "\n"


def _make_task(spec: Stage) -> Task:
    def body(params: Params) -> dict:
        quiet_library_bars()
        fingerprint = stage_fingerprint(spec.name, params)  # once: the stage gets it and the record is keyed on it
        with library_logs_to_prefect():
            result = run(spec.name, params, fingerprint)
        if spec.name == "evaluate":
            create_markdown_artifact(
                key="seap-evaluate-metrics", markdown=metrics_markdown(result), description="seap evaluate metrics"
            )
        # The record a later run hits: these inputs, and the outputs this run has just written.
        get_result_store().write(result, key=stage_key(spec.name, params, fingerprint))
        return result

    body.__name__ = body.__qualname__ = spec.function
    body.__doc__ = spec.help
    return task(
        body,
        name=spec.name,
        cache_policy=StageCache(stage=spec.name),
        persist_result=True,
        retries=spec.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=2) if spec.retries else 0,
        retry_jitter_factor=0.5 if spec.retries else None,
    )


TASKS: dict[str, Task] = {spec.name: _make_task(spec) for spec in STAGES}
