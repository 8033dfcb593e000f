"""The whole seap DAG as a Prefect flow (deployment entrypoint ``flows/pipeline.py:pipeline``).

Runs locally with no server configured (Prefect starts a temporary one). The stages, in registry order, are
the same library functions that ``dvc repro`` runs through ``seap <stage>``, and each is skipped (state
``Cached``) exactly when its inputs and outputs are what a previous run left (``tasks/stages.py``). The
stages run one after another: the training stages seed torch's process-wide RNG, so running two of them
concurrently in one process would make them nondeterministic.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from seap_model.config import load_params
from seap_model.stages import STAGES
from tasks.stages import TASKS


@flow(name="seap-pipeline")
def pipeline(params_path: str = "params.yaml") -> dict:
    """download -> segment -> pretrain-encoder -> pretrain-vae -> pretrain-vocoder -> cache -> finetune -> evaluate ->
    generate.

    Relative paths in the params file resolve against the working directory (the project root). Returns
    which stages ran and which were up to date, and every stage's result.
    """
    params = load_params(params_path)
    logger = get_run_logger()
    ran, cached, results = [], [], {}
    for spec in STAGES:
        state = TASKS[spec.name](params, return_state=True)
        results[spec.name] = state.result()  # raises the stage's error if it failed
        (cached if state.name == "Cached" else ran).append(spec.name)
        logger.info("%s: %s", spec.name, "up to date" if state.name == "Cached" else "ran")
    rows = "\n".join(f"| {s.name} | {'up to date' if s.name in cached else 'ran'} |" for s in STAGES)
    create_markdown_artifact(
        key="seap-pipeline-stages", markdown="| stage | this run |\n|---|---|\n" + rows + "\n", description=params_path
    )
    return {"ran": ran, "cached": cached, "results": results}


if __name__ == "__main__":
    pipeline()
