"""The evaluation's secondary studies: how much the reference moves the output, text-vs-reference conflict,
memorisation of training crops, and sweeps of guidance, sampling steps and reference length."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from seap_model.audio import LogMel, fit_length, load_audio
from seap_model.config import EvaluateParams, SamplingParams
from seap_model.data.manifest import read_manifest
from seap_model.eval.distances import mean_interval
from seap_model.eval.protocols import EvalItem, spread_indices
from seap_model.eval.render import References, log_mels, render
from seap_model.eval.scoring import Backends, ClipSet, cosine, follow_difference, log_mel_distance

log = logging.getLogger(__name__)
SWEEPS = {
    "guidance": "guidance_sweep",
    "steps": "steps_sweep",
    "reference_seconds": "reference_seconds_sweep",
    "style_guidance": "style_guidance_sweep",
}


def reference_ratio(
    first: list[np.ndarray],
    second_seed: list[np.ndarray] | None,
    changes: dict[str, list[np.ndarray]],
    logmel: LogMel,
    feats: Callable[[list], ClipSet],
) -> dict:
    """For each change of conditioning (same prompt, same seed), the per-item distance between outputs divided
    by the distance between two seeds of the same conditioning, median over items; in log-mel RMS and in
    style-embedding cosine distance. A ratio near 0: the change does nothing; >= 1: as much as the noise."""
    base_mel, base_style = log_mels(first, logmel), feats(first).style
    out: dict = {"items": len(first)}
    seed_mel = seed_style = None
    if second_seed is not None:
        seed_mel = log_mel_distance(base_mel, log_mels(second_seed, logmel))
        seed_style = 1.0 - cosine(base_style, feats(second_seed).style)
        out["seed_distance_log_mel"] = float(np.median(seed_mel))
    for name, waves in changes.items():
        mel = log_mel_distance(base_mel, log_mels(waves, logmel))
        style = 1.0 - cosine(base_style, feats(waves).style)
        row = {"distance_log_mel": float(np.median(mel))}
        if seed_mel is not None:
            row["ratio_log_mel"] = float(np.median(mel / np.maximum(seed_mel, 1e-9)))
            row["ratio_style"] = float(np.median(style / np.maximum(seed_style, 1e-9)))
        out[name] = row
    return out


def conflict(
    backends: Backends, generated: ClipSet, baseline: ClipSet, prompt_labels: list[str], reference_labels: list[str]
) -> dict:
    """Prompt of L, reference of M: label hits for L and for M, beside a system that never saw the reference."""
    yam = backends.yamnet.name

    def rates(clips: ClipSet) -> dict:
        return {
            "prompt_label_hit": float(backends.hits(clips.posteriors[yam], prompt_labels).mean()),
            "reference_label_hit": float(backends.hits(clips.posteriors[yam], reference_labels).mean()),
        }

    return {"items": len(prompt_labels), "seap": rates(generated), "without_reference": rates(baseline)}


def training_crops(serst_dir: str | Path, count: int, sample_rate: int, seconds: float, seed: int) -> list[np.ndarray]:
    """``count`` crops of training scenes (random scene and start, fixed seed), as long as generated clips."""
    scenes = read_manifest(Path(serst_dir) / "train.jsonl")
    rng = np.random.default_rng(seed)
    length = int(round(seconds * sample_rate))
    loaded: dict[int, np.ndarray] = {}
    crops = []
    for index in rng.integers(0, len(scenes), size=count):
        if index not in loaded:
            loaded[index] = load_audio(scenes[index].path(scenes[index].audio), sample_rate)
        wave = loaded[index]
        start = int(rng.integers(0, max(1, len(wave) - length)))
        crops.append(fit_length(wave[start:], length).numpy())
    return crops


def memorisation(train: np.ndarray, real: np.ndarray, generated: dict[str, np.ndarray]) -> dict:
    """Nearest-neighbour cosine distance of each clip to the training crops, for held-out real clips and each
    system; ``below_real_p05``: the share of a system's clips nearer a training crop than 95% of real clips."""
    unit = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)

    def nearest(rows: np.ndarray) -> np.ndarray:
        rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return 1.0 - (rows @ unit.T).max(axis=1)

    real_nn = nearest(real)
    p05 = float(np.percentile(real_nn, 5))
    out = {"training_crops": len(train), "real": {"items": len(real), "median": float(np.median(real_nn)), "p05": p05}}
    for name, rows in generated.items():
        nn = nearest(rows)
        out[name] = {
            "items": len(rows),
            "median": float(np.median(nn)),
            "p05": float(np.percentile(nn, 5)),
            "below_real_p05": float((nn < p05).mean()),
        }
    return out


def run_sweeps(
    pipe,
    items: list[EvalItem],
    ev: EvaluateParams,
    sampling: SamplingParams,
    refs: References,
    feats: Callable[[list], ClipSet],
    backends: Backends,
    others: list[np.ndarray],
    out_dir: Path,
    rendered: list[np.ndarray] | None = None,
) -> dict[str, list[dict]]:
    """Transfer-protocol style similarity, follow difference and label hit against guidance, sampling steps,
    reference length and style guidance (one seed, ``sweep_items`` items); one CSV per sweep (DVC plots).
    ``rendered``: the transfer outputs of every item at ``sampling`` and the first seed, reused for the points
    that equal it."""
    pick = spread_indices(len(items), ev.sweep_items)
    chosen = [items[i] for i in pick]
    ids, prompts, labels = [i.id for i in chosen], [i.prompt for i in chosen], [i.label for i in chosen]
    own = np.stack([feats([refs(i.transfer.path).numpy()]).style[0] for i in chosen])
    their_others = [others[i] for i in pick]
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for sweep, field in SWEEPS.items():
        rows = []
        for value in getattr(ev, field):
            setting = sampling
            if sweep == "guidance":
                setting = sampling.model_copy(update={"guidance": float(value)})
            elif sweep == "steps":
                setting = sampling.model_copy(update={"steps": int(value)})
            elif sweep == "style_guidance":  # the text keeps its scale, the reference's alone changes
                text = sampling.guidance if sampling.text_guidance is None else sampling.text_guidance
                setting = sampling.model_copy(update={"text_guidance": text, "style_guidance": float(value)})
            seconds = float(value) if sweep == "reference_seconds" else None
            given = [refs(i.transfer.path, seconds) for i in chosen]
            whole = all(g.shape == refs(i.transfer.path).shape for g, i in zip(given, chosen, strict=True))
            if rendered is not None and setting == sampling and whole:  # the same render as the protocol's
                waves = [rendered[i] for i in pick]
            else:
                waves = render(pipe, ids, prompts, given, ev.seeds[0], setting, ev.batch_size, f"sweep {sweep}={value}")
            clips = feats(waves)
            given_style = np.stack([feats([g.numpy()]).style[0] for g in given]) if seconds else own
            rows.append(
                {
                    sweep: value,
                    "items": len(chosen),
                    "style_similarity": float(cosine(clips.style, given_style).mean()),
                    "style_follow": float(follow_difference(clips.style, given_style, their_others).mean()),
                    "label_hit": float(backends.hits(clips.posteriors[backends.yamnet.name], labels).mean()),
                }
            )
        with open(out_dir / f"{sweep}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        results[sweep] = rows
    return results


def plot_sweeps(sweeps: dict[str, list[dict]], path: Path) -> Path:
    """One panel per sweep: style similarity, follow difference and label hit against the swept value."""
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.2 * len(sweeps), 3.4), squeeze=False)
    for ax, (sweep, rows) in zip(axes[0], sweeps.items()):
        xs = [r[sweep] for r in rows]
        for metric, style in (("style_similarity", "o-"), ("style_follow", "s-"), ("label_hit", "^-")):
            ax.plot(xs, [r[metric] for r in rows], style, label=metric.replace("_", " "))
        ax.set_xlabel(sweep.replace("_", " "))
        ax.set_title(f"{sweep.replace('_', ' ')} ({rows[0]['items']} transfer items)", fontsize=9)
        ax.axhline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std over seeds (std 0 for one value, where ``mean_interval`` has none)."""
    mean, _, std = mean_interval(values)
    return mean, std if len(values) > 1 else 0.0
