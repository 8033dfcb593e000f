"""The generate stage: clips for every item of ``generate.prompts`` (default: the test split).

A re-run generates only what is missing or stale: an item is skipped only when its sidecar records this
model's hash, this code's hash and these sampling settings (``seap_model.generation``). Bad items are reported in
``failures.jsonl`` and the rest still finish.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from seap_model.config import Params
from seap_model.generation import prompt_file_items, run_batch, split_items
from seap_model.hashing import path_digest
from seap_model.pipeline import SEAPPipeline

log = logging.getLogger(__name__)


def generate(params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Generate into ``generate.out_dir`` with the pipeline in ``finetune.out_dir``; returns the report."""
    gp = params.generate
    out_dir = Path(gp.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures: list[dict] = []
    if gp.prompts:
        items, failures = prompt_file_items(gp.prompts)
    else:
        items = split_items(params.data.serst_dir, "test", gp.max_items)
    model_hash = path_digest(params.finetune.out_dir)
    if model_hash is None:
        raise FileNotFoundError(f"{params.finetune.out_dir}: no saved pipeline (run `seap finetune`)")
    # What made an output: the model, and this stage's code (an edited sampler must not reuse old clips).
    provenance = {"model_sha256": model_hash, "code_sha256": fingerprint["code"]}
    pipe = SEAPPipeline.from_pretrained(params.finetune.out_dir)
    pipe.set_progress_bar_config(disable=True)
    done, failed, skipped = run_batch(
        pipe, items, out_dir, gp.sampling, params.finetune.train_seconds, provenance, gp.batch_size
    )
    malformed = len(failures)
    failures += failed
    with open(out_dir / "index.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in sorted(done, key=lambda r: r["id"]))
    with open(out_dir / "failures.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in failures)
    report = {
        "items": len(items) + malformed,
        "generated": len(done) - skipped,
        "already_there": skipped,
        "failed": len(failures),
    }
    for fail in failures:
        log.warning("skipped %s: %s", fail["item"], fail["reason"])
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
