"""The distill stage: the fine-tuned pipeline distilled into one that samples in 1-4 steps (guided latent
consistency distillation, ``seap_model.training.distillation``), saved to ``distill.out_dir``.

On by default. With ``distill.enabled`` off the stage writes its declared outputs saying so (a
``not_trained.json`` in the model folder, metrics ``{"enabled": false}``, header-only curves), so DVC and
Prefect see a finished stage either way.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from accelerate import PartialState

from seap_model.config import Params
from seap_model.progress import write_run_record
from seap_model.stages import mark_not_trained
from seap_model.training.distillation import distill_pipeline
from seap_model.training.system import write_history


def distill(params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Distill ``finetune.out_dir`` (resuming a checkpoint of the same inputs) and save the few-step pipeline,
    its loss curves and metrics; with ``distill.enabled`` off, record that it was not trained."""
    dp = params.distill
    out, report = Path(dp.out_dir), Path(dp.report_dir)
    if not dp.enabled:
        if PartialState().is_main_process:
            mark_not_trained(out, "distill.enabled is false (turn it on to distill the fine-tuned pipeline)")
            report.mkdir(parents=True, exist_ok=True)
            write_history(report, {"train": [], "val": []}, png=False)
            (report / "metrics.json").write_text(json.dumps({"enabled": False}, indent=2) + "\n")
            write_run_record(report, {"enabled": False})
        return {"enabled": False}
    pipe, metrics, record, history = distill_pipeline(params, fingerprint)
    metrics = {"enabled": True, **metrics}
    if PartialState().is_main_process:
        shutil.rmtree(out, ignore_errors=True)
        pipe.save_pretrained(out)
        report.mkdir(parents=True, exist_ok=True)
        write_history(report, history, png=False)
        (report / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_run_record(report, record)
    return metrics
