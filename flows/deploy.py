"""Scheduled deployments of the seap pipeline flow.

``python -m flows.deploy`` serves them from this process (a Prefect API must be configured, e.g.
``prefect server start`` and ``PREFECT_API_URL``); for a work pool, use ``prefect deploy`` with the same
entrypoint, ``flows/pipeline.py:pipeline``.
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from flows.pipeline import pipeline

NIGHTLY_CRON = "0 3 * * *"


def deployments(params_path: str = "params.yaml", cron: str = NIGHTLY_CRON) -> list[RunnerDeployment]:
    """The nightly full pipeline (re-running it is cheap when nothing changed upstream of a stage)."""
    return [pipeline.to_deployment(name="seap-nightly", cron=cron, parameters={"params_path": params_path})]


if __name__ == "__main__":
    serve(*deployments())
