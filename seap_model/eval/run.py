"""One evaluation: does the output follow the prompt, and does it sound like *this* reference?

Systems, all rendered with the same per-item seeds, steps and guidance: SEAP, SEAP with its reference dropped,
and the text-only baseline trained alike by the finetune stage; beside them the real targets and the targets
through codec + vocoder (the ceiling). Protocols (``seap_model.eval.protocols``): paper, transfer (the
headline: a reference from another recording), conflict, unseen captions, memorisation; plus sweeps of
guidance, sampling steps and reference length on the transfer protocol (``seap_model.eval.studies``). Scores
come from frozen evaluators that are not the conditioning encoder (``seap_model.eval.scoring``); they collect
in ``summary.Tables``. The evaluate stage calls the protocols ``evaluate.protocols`` names, in this order:
``score_targets``, ``render_systems``, then ``swap_ratio``, ``conflict``, ``unseen_captions``,
``memorisation``, ``sweeps`` and ``write_report``.
"""

from __future__ import annotations

import logging
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
from seap_model.eval.render import References, real_clip, render, through_codec
from seap_model.eval.scoring import ClipSet, distribution_metrics, featurise, follow_difference, per_item
from seap_model.generation import resolved

log = logging.getLogger(__name__)


class Evaluation:
    """The systems, items, evaluators and real targets of one evaluation (loaded and featurised on
    construction), the rendered audio by (system, protocol, seed), and the tables the protocols fill."""

    def __init__(self, params: Params):
        ev, sr = params.evaluate, params.audio.sample_rate
        seconds = ev.sampling.duration or params.finetune.train_seconds  # the clips, generated and real
        self.params, self.ev, self.sr = params, ev, sr
        self.out = Path(ev.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        systems = load_systems(params.finetune.out_dir, params.finetune.baseline_dir)
        self.seap, self.text_only = systems["seap"], systems.get("text_only")
        self.items = items = build_items(params.data.serst_dir, ev.max_items, ev.split)
        lacking = sorted({i.label for i in items if i.transfer is None or i.alternative is None})
        if lacking:  # the transfer protocol, the sweeps and the memorisation study all use transfer references
            raise ProtocolError(
                f"evaluate: the transfer references need each label from two recordings other than the {ev.split} "
                f"scene's; {params.data.serst_dir} has none for {', '.join(lacking)} (add recordings of those labels)"
            )
        self.backends = load_backends(ev)
        self.cache = FeatureCache(self.out / "features")
        self.refs, self.logmel = References(sr), LogMel(params.audio.mel())
        # As it runs (steps and precision resolved on this pipeline and device), for every system alike.
        self.sampling = resolved(self.seap, ev.sampling.model_copy(update={"duration": seconds}))
        self.ids, self.prompts = [i.id for i in items], [i.prompt for i in items]
        self.labels = labels = [i.label for i in items]
        log.info(
            "evaluate: %d items, seeds %s, protocols %s, systems %s", len(items), ev.seeds, ev.protocols, list(systems)
        )
        self.real_waves = [real_clip(i.scene_audio, i.start, sr, seconds) for i in items]
        self.real = self.feats(self.real_waves)
        self.ceiling = self.feats(through_codec(self.seap, self.real_waves, self.logmel, ev.batch_size))
        self.tables = summary.Tables(len(items), list(ev.seeds), self.backends.chance(self.real, labels), ev.split)
        self.headline = [p for p in ("paper", "transfer") if p in ev.protocols]
        # The references each headline protocol renders with, and the paper references the unseen-caption study
        # renders with even when the paper protocol is not among the headline ones.
        needed = [*self.headline, *(["paper"] if "unseen" in ev.protocols and "paper" not in self.headline else [])]
        self.given = {p: [self.refs(getattr(i, p).path) for i in items] for p in needed}
        self.given_style = {p: np.stack([self.style_of(getattr(i, p)) for i in items]) for p in needed}
        pools = reference_pools(params.data.serst_dir, ev.split)
        self.others = [np.stack([self.style_of(c) for c in other_recordings(i.transfer, pools)]) for i in items]
        self.audio: dict[tuple[str, str, int], list[np.ndarray]] = {}

    def feats(self, waves, names=None) -> ClipSet:
        """Evaluator features of ``waves`` (one clip per item unless ``names`` says otherwise), cached."""
        names = names or (self.ids if len(waves) == len(self.ids) else None)
        return featurise(self.backends, self.cache, waves, self.sr, names)

    def style_of(self, clip) -> np.ndarray:
        """The style evaluator's embedding of a reference clip."""
        return self.cache.features(self.backends.style, self.refs(clip.path).numpy(), self.sr)

    def score(self, clipset: ClipSet, protocol: str, waves=None) -> dict:
        """Per-item scores of ``clipset`` under a headline protocol (follow difference for transfer; CLAP's
        text-audio score where CLAP is configured and the waves are given)."""
        scores = per_item(self.backends, clipset, self.real, self.given_style[protocol], self.labels)
        if protocol == "transfer":
            scores["follow"] = follow_difference(clipset.style, self.given_style[protocol], self.others)
        if self.backends.clap is not None and waves is not None:
            scores["clap"] = self.backends.clap.text_audio_score(waves, self.sr, self.prompts)
        return scores

    def score_targets(self) -> None:
        """The real targets and the ceiling, scored the way every system is."""
        seed = self.ev.seeds[0]
        for p in self.headline:
            self.tables.add_seed(p, "real", seed, self.score(self.real, p, self.real_waves), {})
            scores = self.score(self.ceiling, p)
            self.tables.add_seed(p, "real_codec_vocoder", seed, scores, distribution_metrics(self.ceiling, self.real))

    def render_systems(self) -> None:
        """Every system under every headline protocol and seed, rendered and scored."""
        seap, text_only, ids, prompts, sampling = self.seap, self.text_only, self.ids, self.prompts, self.sampling
        audio = self.audio
        for seed in self.ev.seeds:
            for protocol in self.headline:
                audio["seap", protocol, seed] = render(
                    seap,
                    ids,
                    prompts,
                    self.given[protocol],
                    seed,
                    sampling,
                    self.ev.batch_size,
                    f"{protocol}/seap seed {seed}",
                )
            audio["seap_no_reference", "", seed] = render(
                seap, ids, prompts, None, seed, sampling, self.ev.batch_size, f"no-ref seed {seed}"
            )
            if text_only is not None:
                audio["text_only", "", seed] = render(
                    text_only, ids, prompts, None, seed, sampling, self.ev.batch_size, f"text-only seed {seed}"
                )
            for (system, protocol, s), waves in list(audio.items()):
                if s == seed:
                    clipset = self.feats(waves)
                    for p in [protocol] if protocol else self.headline:  # a reference-free render serves both
                        scores = self.score(clipset, p, waves)
                        self.tables.add_seed(p, system, seed, scores, distribution_metrics(clipset, self.real))

    def swap_ratio(self) -> None:
        """How far swapping or dropping the reference moves the transfer output, against a second seed."""
        seeds, audio = self.ev.seeds, self.audio
        first = seeds[0]
        alternatives = [self.refs(i.alternative.path) for i in self.items]
        swapped = render(
            self.seap, self.ids, self.prompts, alternatives, first, self.sampling, self.ev.batch_size, "swap"
        )
        second = audio["seap", "transfer", seeds[1]] if len(seeds) > 1 else None
        changes = {"reference swapped": swapped, "reference dropped": audio["seap_no_reference", "", first]}
        self.tables.ratio = studies.reference_ratio(
            audio["seap", "transfer", first], second, changes, self.logmel, self.feats
        )

    def conflict(self) -> None:
        """A reference of another label than the prompt's: which one does the output follow?"""
        first = self.ev.seeds[0]
        conflict_labels = [i.conflict.label for i in self.items]
        conflicting = [self.refs(i.conflict.path) for i in self.items]
        waves = render(
            self.seap, self.ids, self.prompts, conflicting, first, self.sampling, self.ev.batch_size, "conflict"
        )
        baseline = self.audio.get(("text_only", "", first)) or self.audio["seap_no_reference", "", first]
        self.tables.conflict = studies.conflict(
            self.backends, self.feats(waves), self.feats(baseline), self.labels, conflict_labels
        )

    def unseen_captions(self) -> None:
        """Captions never trained on (``evaluate.unseen_captions``), with the paper references."""
        ev = self.ev
        training = {c.lower() for c in read_labels(self.params.data.serst_dir).values()}
        table = load_unseen_captions(ev.unseen_captions, sorted(set(self.labels)), training)
        unseen = [unseen_prompt(i, table) for i in self.items]
        for name, pipe, ref in (("seap", self.seap, self.given["paper"]), ("text_only", self.text_only, None)):
            if pipe is None:
                continue
            waves = render(pipe, self.ids, unseen, ref, ev.seeds[0], self.sampling, ev.batch_size, f"unseen/{name}")
            scores = per_item(self.backends, self.feats(waves), self.real, self.given_style["paper"], self.labels)
            if self.backends.clap is not None:
                scores["clap"] = self.backends.clap.text_audio_score(waves, self.sr, unseen)
            self.tables.unseen[name] = summary.scalars(scores, {})

    def memorisation(self) -> None:
        """How close the outputs come to training crops, next to how close the real targets do."""
        ev, params = self.ev, self.params
        crops = studies.training_crops(
            params.data.serst_dir, ev.memorisation_crops, self.sr, self.sampling.duration, params.seed
        )
        train_style = self.feats(crops).style
        first = ev.seeds[0]
        generated = {k[0]: self.feats(v).style for k, v in self.audio.items() if k[2] == first and k[1] != "paper"}
        self.tables.memorisation = studies.memorisation(train_style, self.real.style, generated)

    def sweeps(self) -> Path:
        """The guidance, steps, reference-length and style-guidance sweeps (CSVs under ``sweeps/``); returns the
        path of their plot."""
        rendered = self.audio.get(("seap", "transfer", self.ev.seeds[0]))
        self.tables.sweeps = studies.run_sweeps(
            self.seap,
            self.items,
            self.ev,
            self.sampling,
            self.refs,
            self.feats,
            self.backends,
            self.others,
            self.out / "sweeps",
            rendered,
        )
        return studies.plot_sweeps(self.tables.sweeps, self.out / "sweeps.png")

    def write_report(self, figures: list[Path]) -> Path:
        """tables.json/md, per_category.csv and report.html (with ``figures``) in ``evaluate.out_dir``."""
        ev = self.ev
        written = self.tables.write(self.out, self.labels)
        return summary.build_report(
            self.out / "report.html",
            written,
            figures,
            self.items,
            self.audio,
            self.real_waves,
            self.refs,
            ev.seeds,
            ev.report_items,
            self.sr,
            self.params.audio.mel(),
        )
