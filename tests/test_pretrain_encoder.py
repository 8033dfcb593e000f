"""Encoder pretraining: a tiny run on a synthetic 3-label SERST set, and the metric helpers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from seap_model.audio import save_audio
from seap_model.config import parse_params
from seap_model.eval.encoder import equal_error_rate
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.training.pairs import _group_ids
from tests.runner import run_stage

SR = 16000
LABELS = ["click", "noise", "tone"]
SCENES_PER_LABEL = {"train": 6, "val": 2, "test": 3}


def synth(label: str, rng: np.random.Generator, seconds: float = 1.0) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    if label == "tone":
        return 0.3 * np.sin(2 * np.pi * rng.uniform(300, 2000) * t)
    if label == "noise":
        return 0.1 * rng.standard_normal(n)
    wave = 0.002 * rng.standard_normal(n)
    wave[:: int(SR / rng.uniform(5, 15))] = 0.8
    return wave


def write_serst(root, seed: int = 0) -> None:
    """Manifests + reference WAVs with the SERST schema; pairs of scenes share an event source."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    captions = {label: f"a {label}" for label in LABELS}
    (root / "labels.json").write_text(json.dumps({"labels": LABELS, "captions": captions}))
    for split, count in SCENES_PER_LABEL.items():
        rows = []
        for label in LABELS:
            for k in range(count):
                sid = f"{split}_{label}_{k}"
                ref = f"references/{split}/{sid}_{label}_0.wav"
                save_audio(root / ref, synth(label, rng), SR)
                rows.append(
                    {
                        "id": sid,
                        "split": split,
                        "audio": f"audio/{split}/{sid}.wav",
                        "duration": 1.0,
                        "caption": captions[label],
                        "events": [
                            {
                                "label": label,
                                "onset": 0.0,
                                "offset": 1.0,
                                "source": f"audio/{split}_{label}_{k // 2:02d}.flac",
                            }
                        ],
                        "references": [{"label": label, "audio": ref, "spans": [[0.0, 1.0]]}],
                    }
                )
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def tiny_params(serst, out, **encoder):
    """Tiny encoder; model under ``out/model``, reports under ``out/report``."""
    return parse_params(
        {
            "seed": 3,
            "audio": {"n_fft": 512, "n_mels": 32},
            "data": {"serst_dir": str(serst), "references": {"seconds": 1.0}},
            "encoder": {
                "out_dir": str(out / "model"),
                "report_dir": str(out / "report"),
                "channels": [4, 8, 8, 16],
                "layers": [1, 1, 1, 1],
                "embedding_dim": 16,
                "crop_seconds": 0.5,
                "steps": 12,
                "batch_size": 12,
                "lr": 3e-3,
                **encoder,
            },
        }
    )


def test_tiny_pretraining_writes_outputs_and_learns(tmp_path):
    write_serst(tmp_path / "serst")
    params = tiny_params(tmp_path / "serst", tmp_path / "encoder")
    metrics = run_stage("pretrain-encoder", params)

    model, report = tmp_path / "encoder" / "model", tmp_path / "encoder" / "report"
    assert (model / "config.json").is_file() and list(model.glob("*.safetensors"))
    for name in ("metrics.json", "loss.csv", "embeddings_pca.png"):
        assert (report / name).is_file(), name
    saved = json.loads((report / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    assert not {k for k in saved if "seconds" in k}  # wall-clock times stay out of the tracked metrics
    assert json.loads((report / "run.json").read_text())["train_seconds"] > 0
    for key in ("accuracy", "eer", "untrained_accuracy", "untrained_eer", "final_loss", "steps"):
        assert isinstance(saved[key], (int, float)) and math.isfinite(saved[key]), key
    assert saved["steps"] == 12 and saved["train_references"] == 18 and saved["eval_references"] == 15
    assert saved["scored_train_references"] == 18 and saved["scored_eval_references"] == 15  # all: under the cap
    assert metrics["accuracy"] > 1 / len(LABELS) + 0.2
    assert 0.0 <= metrics["eer"] <= 1.0

    lines = (report / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss" and len(lines) == 13
    encoder = ReferenceEncoder.from_pretrained(model).eval()
    assert encoder.config.embedding_dim == 16
    assert not any(k.startswith("classes") for k in encoder.state_dict())  # the loss head is not saved

    # the same seed reproduces the same training run
    for run in ("a", "b"):
        run_stage("pretrain-encoder", tiny_params(tmp_path / "serst", tmp_path / run, steps=3))
    loss_a, loss_b = ((tmp_path / run / "report" / "loss.csv").read_text() for run in ("a", "b"))
    assert loss_a == loss_b


def test_scoring_spreads_over_the_references_when_capped():
    from seap_model.training.pairs import References

    refs = References(
        torch.arange(10.0)[:, None].repeat(1, 4),
        torch.arange(10),
        torch.arange(10) // 2,
        list("abcdefghij"),
        ["test"] * 10,
    )
    picked = refs.spread(4)
    assert picked.labels.tolist() == [0, 3, 6, 9] and picked.scenes == ["a", "d", "g", "j"]
    assert picked.waves[:, 0].tolist() == [0.0, 3.0, 6.0, 9.0] and picked.groups.tolist() == [0, 1, 3, 4]
    assert refs.spread(None) is refs and refs.spread(50) is refs


def test_equal_error_rate():
    targets = np.array([1, 1, 0, 0, 0])
    assert equal_error_rate(np.array([0.9, 0.8, 0.1, 0.2, 0.3]), targets) == 0.0
    assert equal_error_rate(np.array([0.1, 0.2, 0.9, 0.8, 0.7]), targets) == 1.0
    assert 0.3 < equal_error_rate(np.random.default_rng(0).random(4000), np.arange(4000) % 2) < 0.7


def test_group_ids_merge_shared_sources():
    assert _group_ids([{"a"}, {"b"}, {"a", "c"}, {"c"}, {"d"}]) == [0, 1, 0, 0, 2]


def test_training_batch_has_two_crops_per_distinct_source(tmp_path):
    from seap_model.data.manifest import read_labels
    from seap_model.training.pairs import PairSampler, load_references

    write_serst(tmp_path / "serst")
    params = tiny_params(tmp_path / "serst", tmp_path / "encoder")
    refs = load_references(tmp_path / "serst", ("train",), list(read_labels(tmp_path / "serst")), params)
    assert len(refs.waves) == 18 and len(refs.groups.unique()) == 9
    sampler = PairSampler(refs, 8000, torch.Generator().manual_seed(0))
    crops, labels = sampler.sample(5)
    assert crops.shape == (10, 8000) and labels.shape == (5,)
    assert torch.isfinite(crops).all()


def test_spec_augment_masks_one_band_and_one_span():
    from seap_model.training.pairs import spec_augment

    x = torch.ones(16, 1, 32, 50)
    g = torch.Generator().manual_seed(0)
    assert spec_augment(x, 0, 0, g) is not None and torch.equal(spec_augment(x, 0, 0, g), x)
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())  # no masks, no draws
    y = spec_augment(x, 8, 10, g)
    assert y.shape == x.shape and set(y.unique().tolist()) <= {0.0, 1.0}
    zero = y == 0
    rows, cols = zero.all(dim=3).sum(dim=(1, 2)), zero.all(dim=2).sum(dim=(1, 2))  # masked bands / frames
    assert rows.max() <= 8 and cols.max() <= 10 and rows.sum() > 0 and cols.sum() > 0
    assert torch.equal(
        spec_augment(x, 8, 10, torch.Generator().manual_seed(5)),
        spec_augment(x, 8, 10, torch.Generator().manual_seed(5)),
    )


def test_yamnet_type_exports_the_frozen_encoder_and_scores_it(tmp_path):
    from seap_model.models.loading import load_reference_encoder
    from seap_model.models.yamnet_encoder import YAMNetEncoder

    write_serst(tmp_path / "serst")
    metrics = run_stage("pretrain-encoder", tiny_params(tmp_path / "serst", tmp_path / "encoder", type="yamnet"))
    model, report = tmp_path / "encoder" / "model", tmp_path / "encoder" / "report"
    encoder = load_reference_encoder(model)
    assert type(encoder) is YAMNetEncoder and encoder.center.abs().sum() > 0  # centred on the train references
    assert metrics["steps"] == 0 and metrics["embedding_dim"] == 521
    assert metrics["accuracy"] > 1 / len(LABELS) + 0.2 and 0.0 <= metrics["eer"] <= 1.0
    for key in ("untrained_accuracy", "untrained_eer"):  # the untrained H/ASP baseline, scored the same way
        assert math.isfinite(metrics[key])
    assert json.loads((report / "metrics.json").read_text()) == pytest.approx(metrics)
    assert (report / "loss.csv").read_text().splitlines() == ["step,loss"]
    assert (report / "embeddings_pca.png").is_file()


def test_distillation_from_frozen_yamnet_trains(tmp_path):
    write_serst(tmp_path / "serst")
    metrics = run_stage(
        "pretrain-encoder", tiny_params(tmp_path / "serst", tmp_path / "encoder", steps=3, distill_weight=1.0)
    )
    assert metrics["steps"] == 3 and math.isfinite(metrics["final_loss"])
    saved = ReferenceEncoder.from_pretrained(tmp_path / "encoder" / "model").state_dict()
    fresh = ReferenceEncoder(**saved_config(tmp_path / "encoder" / "model")).state_dict()
    assert saved.keys() == fresh.keys()  # the distillation head is not part of the exported encoder


def saved_config(model) -> dict:
    config = json.loads((model / "config.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}
