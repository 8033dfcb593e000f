"""The pretrain-vocoder stage: train the learned vocoder (log-mel -> waveform) on the training scenes' audio.

Only the training split is read, so the benchmark and the evaluation measure it on recordings it never saw.
With ``vocoder.type`` other than ``learned`` there is nothing to train: the stage records that and writes an
empty ``vocoder.out_dir``.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from seap_model.audio import load_audio
from seap_model.config import Params
from seap_model.data.manifest import read_manifest
from seap_model.models.vocoder import new_learned_vocoder
from seap_model.progress import progress, write_run_record
from seap_model.training.vocoder import train_vocoder

log = logging.getLogger(__name__)


def pretrain_vocoder(params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Train the learned vocoder on the train split's scenes and save it to ``vocoder.out_dir``."""
    start = time.perf_counter()
    v, settings = params.vocoder, params.audio.mel()
    out, report = Path(v.out_dir), Path(v.report_dir)
    shutil.rmtree(out, ignore_errors=True)
    report.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"vocoder": v.type}
    losses: list[float] = []
    if v.type == "learned":
        torch.manual_seed(params.seed)
        scenes = read_manifest(Path(params.data.serst_dir) / "train.jsonl")
        waves = [load_audio(s.path(s.audio), settings.sample_rate) for s in progress(scenes, desc="audio")]
        vocoder = new_learned_vocoder(v, settings)
        losses = train_vocoder(vocoder, waves, settings, v, params.seed)
        vocoder.save_pretrained(out)
        tail = losses[-max(1, len(losses) // 20) :]
        metrics |= {
            "scenes": len(waves),
            "parameters": sum(p.numel() for p in vocoder.parameters()),
            "steps": v.steps,
            "final_loss": round(sum(tail) / len(tail), 5),
        }
        log.info("learned vocoder saved to %s (final loss %.4f)", out, metrics["final_loss"])
    else:
        out.mkdir(parents=True, exist_ok=True)
        log.info("vocoder.type %s: nothing to train", v.type)
    with (report / "loss.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss"])
        writer.writerows((i, round(loss, 6)) for i, loss in enumerate(losses))
    (report / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_run_record(report, {"seconds": round(time.perf_counter() - start, 2)})
    return metrics
