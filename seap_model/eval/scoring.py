"""Scores of one set of generated clips against the real targets, overall and per event category.

Which frozen model measures what (none of them is the conditioning encoder the adapter was trained on):

* label hits: YAMNet (its label table maps each corpus label to AudioSet classes), against the chance rate of
  mismatched labels;
* distributions (FD, FAD-infinity, KID, KAD): the embedding of every evaluator given (YAMNet's 1024-d always;
  VGGish 128-d, the FAD standard, PANNs 2048-d, the paper's FD, CLAP audio when given), keyed by backend;
* posteriors (KL softmax and sigmoid, paired with the item's target; IS): YAMNet's, and PANNs' when given;
* style: cosine between the output's and the given reference's embedding under ``style`` (YAMNet default);
* text agreement: CLAP text-audio cosine, when a CLAP model is given.

Distribution metrics per category rest on a handful of clips (fewer than the embedding's dimensions), so the
per-category tables give the paired, per-item metrics only (hits, style, KL), each with its item count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seap_model.audio import AudioError
from seap_model.eval.distances import fad_infinity, inception_score, kernel_distance, kl_divergence
from seap_model.eval.feature_cache import FeatureCache
from seap_model.eval.metrics import chance_hit_rate, frechet_distance, item_hits


@dataclass
class Backends:
    """The evaluators of one run: ``yamnet`` always; the others when their weights are given."""

    yamnet: object
    style: object
    extra: tuple = ()  # VGGish, PANNs, CLAP (embedding backends; PANNs also gives posteriors)
    clap: object | None = None
    class_names: Sequence[str] = ()
    label_table: dict | None = None
    top_k: int = 10

    @property
    def embedders(self) -> list:
        return [self.yamnet, *self.extra]

    @property
    def taggers(self) -> list:
        return [self.yamnet, *(e for e in self.extra if e.name == "panns")]

    def hits(self, posteriors: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """Per item: 1 if YAMNet's top k holds a class of the item's label."""
        return item_hits(posteriors, labels, self.label_table, self.class_names, self.top_k)

    def chance(self, clips: ClipSet, labels: Sequence[str]) -> float:
        """The hit rate of mismatched labels on these clips (what a clip of no particular label scores)."""
        yam = clips.posteriors[self.yamnet.name]
        return chance_hit_rate(yam, labels, self.label_table, self.class_names, self.top_k)


@dataclass
class ClipSet:
    """Features of clips (rows in item order), by backend name."""

    embedding: dict[str, np.ndarray]
    posteriors: dict[str, np.ndarray]
    style: np.ndarray


def featurise(
    backends: Backends, cache: FeatureCache, waves: Sequence, sample_rate: int, names: Sequence[str] | None = None
) -> ClipSet:
    """Every backend's features of ``waves`` (through the content-keyed cache). A clip an evaluator rejects (NaN,
    empty) raises AudioError naming it (``names[i]``, else its index)."""

    def rows(evaluator, kind: str) -> np.ndarray:
        out = []
        for i, wave in enumerate(waves):
            try:
                out.append(cache.features(evaluator, wave, sample_rate, kind))
            except AudioError as exc:
                raise AudioError(f"clip {names[i] if names else i}: {exc}") from None
        return np.stack(out)

    return ClipSet(
        embedding={e.name: rows(e, "embedding") for e in backends.embedders},
        posteriors={e.name: rows(e, "posteriors") for e in backends.taggers},
        style=rows(backends.style, "embedding"),
    )


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of paired rows; a zero row (a silent clip) scores 0."""
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    ok = (na > 0) & (nb > 0)
    return np.where(ok, (a * b).sum(-1) / np.where(ok, na * nb, 1.0), 0.0)


def distribution_metrics(generated: ClipSet, real: ClipSet) -> dict[str, float]:
    """FD, FAD-infinity, KID, KAD per embedding backend; KL (paired) and IS per tagger."""
    out: dict[str, float] = {}
    for name, gen in generated.embedding.items():
        ref = real.embedding[name]
        out[f"fd_{name}"] = frechet_distance(gen, ref)
        out[f"fad_inf_{name}"] = fad_infinity(ref, gen).score
        out[f"kid_{name}"] = kernel_distance(ref, gen, "polynomial")
        out[f"kad_{name}"] = kernel_distance(ref, gen, "gaussian")
    for name, gen in generated.posteriors.items():
        out[f"kl_softmax_{name}"] = kl_divergence(real.posteriors[name], gen, "softmax")
        out[f"kl_sigmoid_{name}"] = kl_divergence(real.posteriors[name], gen, "sigmoid")
        out[f"is_{name}"] = inception_score(gen)
    return out


def per_item(backends: Backends, generated: ClipSet, real: ClipSet, references: np.ndarray, labels) -> dict:
    """Paired scores of every item: label hit, style similarity to its reference and to its target, KL."""
    yam = backends.yamnet.name
    eps = 1e-12
    p = np.clip(real.posteriors[yam], eps, 1.0)
    q = np.clip(generated.posteriors[yam], eps, 1.0)
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    return {
        "hit": backends.hits(generated.posteriors[yam], labels),
        "style": cosine(generated.style, references),
        "target_similarity": cosine(generated.style, real.style),
        "kl_softmax": (p * np.log(p / q)).sum(1),
    }


def follow_difference(output_style: np.ndarray, own: np.ndarray, others: Sequence[np.ndarray]) -> np.ndarray:
    """Per item: similarity to its own reference minus the mean similarity to references of the same label from
    other recordings (``others[i]``: [K_i, D]). Positive: the output follows the reference it was given."""
    return np.array(
        [
            cosine(o, r) - cosine(np.broadcast_to(o, oth.shape), oth).mean()
            for o, r, oth in zip(output_style, own, others, strict=True)
        ]
    )


def by_category(values: dict[str, np.ndarray], labels: Sequence[str]) -> dict[str, dict]:
    """Mean of each per-item score within each label, with the label's item count."""
    labels = np.asarray(labels)
    return {
        label: {
            "items": int((labels == label).sum()),
            **{k: float(v[labels == label].mean()) for k, v in values.items()},
        }
        for label in sorted(set(labels.tolist()))
    }


def log_mel_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair: RMS difference of two log-mel spectrograms [N, mels, frames] (same shape), in log units."""
    return np.sqrt(((a - b) ** 2).mean(axis=(1, 2)))
