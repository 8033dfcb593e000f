"""The generate stage: clips for every item of ``generate.prompts`` (default: the test split).

A re-run generates only what is missing or stale: the batch engine (``seap_model.batch``) names each output
after its item and a hash of what made it (this model's hash, this stage's code fingerprint, the item and
the sampling settings) and skips it only when its sidecar is there. Bad items are reported in
``failures.jsonl`` and the rest still finish.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from seap_model.batch.engine import open_pipeline
from seap_model.batch.items import generate_items, prompt_file_items, split_items
from seap_model.config import Params

log = logging.getLogger(__name__)


def generate(params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Generate into ``generate.out_dir`` with the pipeline in ``finetune.out_dir``; returns the report.
    ``fingerprint["code"]``: this stage's code fingerprint, recorded in every output (an edited sampler must
    not reuse old clips)."""
    gp = params.generate
    out_dir = Path(gp.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures: list[dict] = []
    if gp.prompts:
        items, failures = prompt_file_items(gp.prompts)
    else:
        items = split_items(params.data.serst_dir, "test", gp.max_items)
    pipe, model_hash = open_pipeline(params.finetune.out_dir)
    provenance = {"model_sha256": model_hash, "code_sha256": fingerprint["code"]}
    done, failed, skipped = generate_items(pipe, items, out_dir, gp.sampling, provenance, gp.batch_size)
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
