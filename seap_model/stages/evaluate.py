"""The evaluate stage: does the generated audio follow the prompt and sound like the reference?

For every test item (a caption + a reference of an unseen recording) it generates with SEAP and with the
same model with the reference dropped (same seeds), and scores, next to the real test clips and the real
clips passed through codec + vocoder (the ceiling the generator can reach):

* how often YAMNet (an AudioSet classifier nobody here trained) puts the intended event in its top k,
  against the chance rate of mismatched labels;
* Fréchet distance between YAMNet score vectors of generated and real clips;
* reference-style similarity: cosine between reference-encoder embeddings of the output and the reference.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from seap_model.audio import LogMel, fit_length, load_audio
from seap_model.config import Params
from seap_model.eval.labels import load_label_table
from seap_model.eval.metrics import frechet_distance, hit_summary, style_similarity
from seap_model.generation import Item, item_generator, split_items
from seap_model.models.yamnet import YAMNet
from seap_model.pipeline import SEAPPipeline
from seap_model.plots import plot_spectrograms
from seap_model.progress import progress, write_run_record

log = logging.getLogger(__name__)
SYSTEMS = ("seap", "text_only", "real", "real_codec_vocoder")


def real_clip(item: Item, sample_rate: int, seconds: float) -> torch.Tensor:
    """The test scene cropped where the item's event starts, as long as the generated clips."""
    wave = load_audio(item.scene_audio, sample_rate)
    start = int(item.start * sample_rate)
    return fit_length(wave[start:], int(round(seconds * sample_rate)))


def render(pipe: SEAPPipeline, items: list[Item], params: Params) -> dict[str, list[np.ndarray]]:
    """Audio of every system for every item (generated in batches, paired seeds)."""
    ev, sr, seconds = params.evaluate, params.audio.sample_rate, params.finetune.train_seconds
    logmel = LogMel(params.audio.mel())
    out: dict[str, list[np.ndarray]] = {name: [] for name in SYSTEMS}
    out["reference"] = []
    for start in progress(range(0, len(items), ev.batch_size), desc="evaluate", unit="batch"):
        chunk = items[start : start + ev.batch_size]
        refs = [load_audio(it.reference, sr, min_seconds=0.5) for it in chunk]
        prompts = [it.prompt for it in chunk]
        for name, ref in (("seap", refs), ("text_only", None)):
            gens = [item_generator(ev.sampling.seed, it.id) for it in chunk]
            result = pipe(
                prompts,
                ref,
                duration=seconds,
                num_inference_steps=ev.sampling.steps,
                guidance_scale=ev.sampling.guidance,
                generator=gens,
                progress=False,
            )
            out[name] += list(result.audios)
        reals = torch.stack([real_clip(it, sr, seconds) for it in chunk])
        with torch.no_grad():
            through = pipe.vocoder(pipe.codec.decode(pipe.codec.encode(logmel(reals))))
        out["real"] += list(reals.numpy())
        out["real_codec_vocoder"] += list(through.numpy())
        out["reference"] += [r.numpy() for r in refs]
    return out


@torch.no_grad()
def embed(pipe: SEAPPipeline, waves: list[np.ndarray]) -> np.ndarray:
    """Reference-encoder embeddings (one at a time: clips may differ in length; silence -> zero vector)."""
    rows = []
    for w in waves:
        try:
            rows.append(pipe.reference_encoder(torch.as_tensor(w, dtype=torch.float32)[None])[0].numpy())
        except ValueError:  # a silent or non-finite output has no style: count it as dissimilar
            rows.append(np.zeros(pipe.reference_encoder.config.embedding_dim, dtype=np.float32))
    return np.stack(rows)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> float:
    """Mean paired cosine, where an all-zero row (silent output) scores 0."""
    ok = (np.linalg.norm(a, axis=1) > 0) & (np.linalg.norm(b, axis=1) > 0)
    if not ok.any():
        return 0.0
    return float(style_similarity(a[ok], b[ok]) * ok.sum() / len(ok))


def evaluate(params: Params) -> dict:
    """Run the evaluation and write ``metrics.json``, per-label hit rates and example spectrograms."""
    ev = params.evaluate
    start_time = time.perf_counter()
    out = Path(ev.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe = SEAPPipeline.from_pretrained(params.finetune.out_dir)
    pipe.set_progress_bar_config(disable=True)
    items = split_items(params.data.serst_dir, "test", ev.max_items)
    if not items:
        raise ValueError(f"{params.data.serst_dir}/test.jsonl has no items with a reference to evaluate")
    audio = render(pipe, items, params)

    yamnet, table = YAMNet(), load_label_table()
    labels = [it.label for it in items]
    sr = params.audio.sample_rate
    scores = {name: np.stack([yamnet.scores(w, sr) for w in audio[name]]) for name in SYSTEMS}
    hits = {name: hit_summary(scores[name], labels, table, yamnet.class_names, ev.top_k) for name in SYSTEMS}
    embeddings = {name: embed(pipe, audio[name]) for name in (*SYSTEMS, "reference")}

    metrics: dict = {"items": len(items), "top_k": ev.top_k}
    for name in SYSTEMS:
        metrics[f"yamnet_hit_{name}"] = hits[name]["hit_rate"]
        metrics[f"style_similarity_{name}"] = cosine_rows(embeddings[name], embeddings["reference"])
    metrics["yamnet_chance"] = hits["seap"]["chance_rate"]
    metrics["yamnet_hit_over_chance_seap"] = hits["seap"]["hit_over_chance"]
    metrics["yamnet_hit_over_chance_text_only"] = hits["text_only"]["hit_over_chance"]
    for name in ("seap", "text_only", "real_codec_vocoder"):
        metrics[f"fd_yamnet_{name}"] = frechet_distance(scores[name], scores["real"])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_run_record(out, {"seconds": round(time.perf_counter() - start_time, 1)})
    (out / "per_label.json").write_text(json.dumps({n: hits[n]["per_label"] for n in SYSTEMS}, indent=2))
    write_examples(pipe, items, audio, out / "examples.png", params)
    log.info(
        "evaluate: SEAP hit %.2f (chance %.2f), text-only %.2f, real %.2f, ceiling %.2f",
        metrics["yamnet_hit_seap"],
        metrics["yamnet_chance"],
        metrics["yamnet_hit_text_only"],
        metrics["yamnet_hit_real"],
        metrics["yamnet_hit_real_codec_vocoder"],
    )
    return metrics


def write_examples(
    pipe: SEAPPipeline, items: list[Item], audio: dict, path: Path, params: Params, count: int = 3
) -> None:
    """Spectrograms of reference / SEAP / text-only / real for the first few items, one PNG per item row."""
    logmel = LogMel(params.audio.mel())
    hop = params.audio.hop_length / params.audio.sample_rate
    mels, titles = [], []
    for i, item in enumerate(items[:count]):
        for name in ("reference", "seap", "text_only", "real"):
            mels.append(logmel(torch.as_tensor(audio[name][i], dtype=torch.float32)))
            titles.append(f"{item.label}: {name}")
    plot_spectrograms(mels, titles, path, hop, columns=4)
