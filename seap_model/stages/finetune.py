"""The finetune stage: train the adapter and the style-modulated U-Net on the cache, save the ``SEAPPipeline``
(and, with ``finetune.baseline``, the text-only baseline trained alike).

Inputs come only from the cache stage (latents, caption tokens, reference embeddings), so no frozen
model runs during training. Each system is built, trained and saved by ``seap_model.training.system``; its
checkpoint in ``finetune.checkpoint_dir`` is resumed only if it was made from the same cache content, params
and training code (the stage's ``fingerprint``, ``seap_model.fingerprint.stage_fingerprint``).
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
from seap_model.training.system import train_system


def finetune(params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Train SEAP (and, with ``finetune.baseline``, the text-only baseline the same way), resuming checkpoints of
    the same inputs; save each pipeline, its loss curves and the metrics."""
    fp = params.finetune
    metrics, record = train_system(params, "seap", fingerprint)
    main = PartialState().is_main_process
    if main:
        shutil.rmtree(fp.baseline_dir, ignore_errors=True)
    if fp.baseline and fp.uses_reference:
        text_only = params.model_copy(
            update={"finetune": fp.model_copy(update={"style": "off", "out_dir": fp.baseline_dir})}
        )
        metrics["text_only"], record["text_only"] = train_system(text_only, "text_only", fingerprint)
    elif main:  # the declared output still exists, and says why it holds no model
        off = not fp.uses_reference
        why = "finetune.style is off: the model is itself text-only" if off else "finetune.baseline: false"
        mark_not_trained(Path(fp.baseline_dir), why)
        # Its declared validation curve too: the header alone (a baseline's curve has no rows to give).
        curve = Path(fp.report_dir) / "text_only" / "val_loss.csv"
        curve.parent.mkdir(parents=True, exist_ok=True)
        curve.write_text("step,val_loss\n")
    if main:
        out = Path(fp.report_dir)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_run_record(out, record)
    return metrics
