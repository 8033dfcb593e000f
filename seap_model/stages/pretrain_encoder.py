"""The pretrain-encoder stage: train (or, for YAMNet, set up) the reference encoder, score it, export it.

Training follows clova's speaker-verification recipe: each step takes ``batch_size // 2`` sources
with two augmented random crops each and minimises AM-softmax over event labels plus the angular
prototypical loss over the crop pairs. A "source" is a set of references that share a source
recording (an event ``source`` of the reference's label), so crops of one reference, and of references
cut from the same recording in other scenes, are positives and never appear as negatives.
Optional extras (off by default; measured no clear gain on the embedded corpus): SpecAugment masks
(``freq_mask``/``time_mask``) and a cosine loss to frozen YAMNet's embedding (``distill_weight``).

With ``encoder.type: yamnet`` nothing is trained: the frozen YAMNet encoder is centred on the training
references, exported and scored the same way.

Evaluation, on the val+test references (other recordings than train): label accuracy of a linear
probe fitted on the train embeddings, its L2 penalty chosen by cross-validation over train source
groups (so neither encoder is scored with a penalty that suits only the other), and the same-source
EER; both next to an untrained H/ASP encoder of the same shape and initial weights. That baseline
keeps its initial BatchNorm statistics: re-estimating them on the train references made it worse
(accuracy 0.28 -> 0.20, EER 0.09 -> 0.24, two seeds), so the stronger variant is the one reported.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from seap_model.config import Params
from seap_model.data.manifest import read_labels
from seap_model.eval.encoder import embed, plot_pca
from seap_model.progress import write_run_record
from seap_model.training.encoder import build_yamnet, score_with_untrained, train_hasp
from seap_model.training.pairs import load_references

log = logging.getLogger(__name__)


def pretrain_encoder(params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Train (type hasp) or set up (type yamnet) the reference encoder and save it to ``encoder.out_dir``;
    write metrics.json, loss.csv and embeddings_pca.png to ``encoder.report_dir``; return the metrics.

    Both types are scored the same way on the val+test references, next to an untrained H/ASP
    encoder of the configured shape (the ``untrained_*`` metrics)."""
    enc = params.encoder
    serst_dir, out_dir, report_dir = Path(params.data.serst_dir), Path(enc.out_dir), Path(enc.report_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stage_start = time.perf_counter()
    labels = list(read_labels(serst_dir))
    train = load_references(serst_dir, ("train",), labels, params)
    held = load_references(serst_dir, ("val", "test"), labels, params)
    log.info(
        "encoder (%s): %d train references (%d source groups), %d val+test",
        enc.type,
        len(train.waves),
        len(train.groups.unique()),
        len(held.waves),
    )

    start = time.perf_counter()
    if enc.type == "yamnet":
        encoder, losses = build_yamnet(params, train), []
    else:
        encoder, losses = train_hasp(params, train, len(labels), device)
    seconds = time.perf_counter() - start
    tail = losses[-max(1, min(20, len(losses))) :]
    # Scoring embeds every scored reference twice (trained and untrained encoder) and both halves again for the
    # EER: on all of corpus v2's ~7,000 references that took longer than the training itself.
    scored_train, scored_held = train.spread(enc.score_references), held.spread(enc.score_references)
    metrics = {
        **score_with_untrained(params, encoder, scored_train, scored_held, len(labels), device),
        "final_loss": float(np.mean(tail)) if tail else 0.0,
        "steps": enc.steps if enc.type == "hasp" else 0,
        "train_references": len(train.waves),
        "eval_references": len(held.waves),
        "scored_train_references": len(scored_train.waves),
        "scored_eval_references": len(scored_held.waves),
        "embedding_dim": int(encoder.config.embedding_dim),
    }

    encoder.to("cpu").save_pretrained(out_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    with open(report_dir / "loss.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss"])
        writer.writerows((i + 1, f"{v:.6f}") for i, v in enumerate(losses))
    test = torch.tensor([s == "test" for s in scored_held.splits])
    shown = test if test.any() else torch.ones_like(test)
    plot_pca(
        embed(encoder, scored_held.waves[shown], torch.device("cpu")),
        scored_held.labels[shown],
        labels,
        report_dir / "embeddings_pca.png",
    )
    stage_seconds = round(time.perf_counter() - stage_start, 1)
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_run_record(report_dir, {"train_seconds": round(seconds, 1), "stage_seconds": stage_seconds})
    log.info(
        "encoder (%s): accuracy %.3f (untrained H/ASP %.3f), EER %.3f (untrained %.3f); %.0f s training, %.0f s stage",
        enc.type,
        metrics["accuracy"],
        metrics["untrained_accuracy"],
        metrics["eer"],
        metrics["untrained_eer"],
        seconds,
        stage_seconds,
    )
    return metrics
