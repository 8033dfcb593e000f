"""The whole seap DAG as a Prefect flow (deployment entrypoint ``flows/pipeline.py:pipeline``).

Runs locally with no server configured (Prefect starts a temporary one). The stages are the same library
functions that ``dvc repro`` runs through ``seap <stage>``.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from seap_model.config import load_params
from tasks.stages import (
    cache_task,
    download_task,
    evaluate_task,
    finetune_task,
    generate_task,
    pretrain_encoder_task,
    pretrain_vae_task,
    segment_task,
)


@flow(name="seap-pipeline")
def pipeline(params_path: str = "params.yaml") -> dict:
    """download -> segment -> pretrain-encoder -> pretrain-vae -> cache -> finetune -> evaluate -> generate.

    Relative paths in the params file resolve against the working directory (the project root).
    """
    params = load_params(params_path)
    logger = get_run_logger()
    results = {}
    for name, stage in (
        ("download", download_task),
        ("segment", segment_task),
        ("pretrain-encoder", pretrain_encoder_task),
        ("pretrain-vae", pretrain_vae_task),
        ("cache", cache_task),
        ("finetune", finetune_task),
        ("evaluate", evaluate_task),
        ("generate", generate_task),
    ):
        results[name] = stage(params)
        logger.info("%s: %s", name, results[name])
    return results


if __name__ == "__main__":
    pipeline()
