"""The evaluate stage: does the output follow the prompt, and does it sound like *this* reference?

Systems, all rendered with the same per-item seeds, steps and guidance: SEAP, SEAP with its reference dropped,
and the text-only baseline trained alike by the finetune stage; beside them the real targets and the targets
through codec + vocoder (the ceiling). Protocols (``seap_model.eval.protocols``): paper, transfer (the
headline: a reference from another recording), conflict, unseen captions, memorisation; plus sweeps of
guidance, sampling steps and reference length on the transfer protocol. Scores come from frozen evaluators
that are not the conditioning encoder (``seap_model.eval.scoring``). Writes ``metrics.json`` (the headline,
for ``dvc metrics show``), ``tables.json``/``tables.md`` (everything, with item counts and seed spread),
``per_category.csv``, the sweep CSVs and plot, and the self-contained ``report.html``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from seap_model.audio import LogMel
from seap_model.config import Params
from seap_model.data.manifest import read_labels
from seap_model.eval import studies, summary
from seap_model.eval.backends import load_backends, load_systems
from seap_model.eval.feature_cache import FeatureCache
from seap_model.eval.protocols import (
    ProtocolError,
    build_items,
    load_unseen_captions,
    other_recordings,
    reference_pools,
    unseen_prompt,
)
from seap_model.eval.render import References, Sampling, real_clip, render, through_codec
from seap_model.eval.scoring import ClipSet, distribution_metrics, featurise, follow_difference, per_item
from seap_model.progress import write_run_record

log = logging.getLogger(__name__)


def evaluate(params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Run every protocol of ``evaluate.protocols`` and write the tables, plots and report."""
    ev, sr, seconds = params.evaluate, params.audio.sample_rate, params.finetune.train_seconds
    started = time.perf_counter()
    out = Path(ev.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    systems = load_systems(params.finetune.out_dir, params.finetune.baseline_dir)
    seap, text_only = systems["seap"], systems.get("text_only")
    items = build_items(params.data.serst_dir, ev.max_items, ev.split)
    lacking = sorted({i.label for i in items if i.transfer is None or i.alternative is None})
    if lacking:  # the transfer protocol, the sweeps and the memorisation study all use transfer references
        raise ProtocolError(
            f"evaluate: the transfer references need each label from two recordings other than the {ev.split} "
            f"scene's; {params.data.serst_dir} has none for {', '.join(lacking)} (add recordings of those labels)"
        )
    backends = load_backends(ev)
    cache = FeatureCache(out / "features")
    refs, logmel = References(sr), LogMel(params.audio.mel())
    sampling = Sampling(
        ev.sampling.steps,
        ev.sampling.guidance,
        seconds,
        ev.batch_size,
        ev.sampling.text_guidance,
        ev.sampling.style_guidance,
        ev.sampling.scheduler,
        ev.sampling.precision,
        ev.sampling.vocoder_iterations,
    )
    ids, prompts, labels = [i.id for i in items], [i.prompt for i in items], [i.label for i in items]
    log.info(
        "evaluate: %d items, seeds %s, protocols %s, systems %s", len(items), ev.seeds, ev.protocols, list(systems)
    )

    def feats(waves, names=None) -> ClipSet:
        return featurise(backends, cache, waves, sr, names or (ids if len(waves) == len(ids) else None))

    def style_of(clip) -> np.ndarray:
        return cache.features(backends.style, refs(clip.path).numpy(), sr)

    real_waves = [real_clip(i.scene_audio, i.start, sr, seconds) for i in items]
    real = feats(real_waves)
    ceiling = feats(through_codec(seap, real_waves, logmel, ev.batch_size))
    tables = summary.Tables(len(items), list(ev.seeds), backends.chance(real, labels), ev.split)
    headline = [p for p in ("paper", "transfer") if p in ev.protocols]
    given = {p: [refs(getattr(i, p).path) for i in items] for p in headline}
    given_style = {p: np.stack([style_of(getattr(i, p)) for i in items]) for p in headline}
    pools = reference_pools(params.data.serst_dir, ev.split)
    others = [np.stack([style_of(c) for c in other_recordings(i.transfer, pools)]) for i in items]

    def score(clipset: ClipSet, protocol: str, waves=None) -> dict:
        scores = per_item(backends, clipset, real, given_style[protocol], labels)
        if protocol == "transfer":
            scores["follow"] = follow_difference(clipset.style, given_style[protocol], others)
        if backends.clap is not None and waves is not None:
            scores["clap"] = backends.clap.text_audio_score(waves, sr, prompts)
        return scores

    for p in headline:  # the real targets and the ceiling, scored the way every system is
        tables.add_seed(p, "real", ev.seeds[0], score(real, p, real_waves), {})
        tables.add_seed(p, "real_codec_vocoder", ev.seeds[0], score(ceiling, p), distribution_metrics(ceiling, real))
    audio: dict[tuple[str, str, int], list[np.ndarray]] = {}
    for seed in ev.seeds:
        for protocol in headline:
            audio["seap", protocol, seed] = render(
                seap, ids, prompts, given[protocol], seed, sampling, f"{protocol}/seap seed {seed}"
            )
        audio["seap_no_reference", "", seed] = render(seap, ids, prompts, None, seed, sampling, f"no-ref seed {seed}")
        if text_only is not None:
            audio["text_only", "", seed] = render(
                text_only, ids, prompts, None, seed, sampling, f"text-only seed {seed}"
            )
        for (system, protocol, s), waves in list(audio.items()):
            if s == seed:
                clipset = feats(waves)
                for p in [protocol] if protocol else headline:  # a reference-free render serves both protocols
                    tables.add_seed(p, system, seed, score(clipset, p, waves), distribution_metrics(clipset, real))

    if "transfer" in ev.protocols:
        first = ev.seeds[0]
        swapped = render(seap, ids, prompts, [refs(i.alternative.path) for i in items], first, sampling, "swap")
        second = audio["seap", "transfer", ev.seeds[1]] if len(ev.seeds) > 1 else None
        changes = {"reference swapped": swapped, "reference dropped": audio["seap_no_reference", "", first]}
        tables.ratio = studies.reference_ratio(audio["seap", "transfer", first], second, changes, logmel, feats)
    if "conflict" in ev.protocols:
        conflict_labels = [i.conflict.label for i in items]
        waves = render(seap, ids, prompts, [refs(i.conflict.path) for i in items], ev.seeds[0], sampling, "conflict")
        baseline = audio.get(("text_only", "", ev.seeds[0])) or audio["seap_no_reference", "", ev.seeds[0]]
        tables.conflict = studies.conflict(backends, feats(waves), feats(baseline), labels, conflict_labels)
    if "unseen" in ev.protocols:
        training = {c.lower() for c in read_labels(params.data.serst_dir).values()}
        table = load_unseen_captions(ev.unseen_captions, sorted(set(labels)), training)
        unseen = [unseen_prompt(i, table) for i in items]
        for name, pipe, ref in (("seap", seap, given["paper"]), ("text_only", text_only, None)):
            if pipe is None:
                continue
            waves = render(pipe, ids, unseen, ref, ev.seeds[0], sampling, f"unseen/{name}")
            scores = per_item(backends, feats(waves), real, given_style["paper"], labels)
            if backends.clap is not None:
                scores["clap"] = backends.clap.text_audio_score(waves, sr, unseen)
            tables.unseen[name] = summary.scalars(scores, {})
    if "memorisation" in ev.protocols:
        crops = studies.training_crops(params.data.serst_dir, ev.memorisation_crops, sr, seconds, params.seed)
        train_style = feats(crops).style
        generated = {k[0]: feats(v).style for k, v in audio.items() if k[2] == ev.seeds[0] and k[1] != "paper"}
        tables.memorisation = studies.memorisation(train_style, real.style, generated)

    rendered = audio.get(("seap", "transfer", ev.seeds[0]))
    tables.sweeps = studies.run_sweeps(
        seap, items, ev, sampling, refs, feats, backends, others, out / "sweeps", rendered
    )
    figure = studies.plot_sweeps(tables.sweeps, out / "sweeps.png")
    written = tables.write(out, labels)
    report = summary.build_report(
        out / "report.html",
        written,
        [figure],
        items,
        audio,
        real_waves,
        refs,
        ev.seeds,
        ev.report_items,
        sr,
        params.audio.mel(),
    )
    write_run_record(out, {"seconds": round(time.perf_counter() - started, 1), "cache_hits": cache.hits})
    log.info("evaluate: %s", tables.headline_line())
    log.info("evaluate: report written to %s", report)
    return tables.metrics()
