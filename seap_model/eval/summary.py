"""An evaluation's numbers gathered over seeds, and written out: ``metrics.json`` (the headline, for ``dvc
metrics show``), ``tables.json`` (everything), ``tables.md`` and ``report.html`` (the same tables, built once),
``per_category.csv``.

Headline numbers are the mean and sample std over sampling seeds (each seed renders every item). The follow
difference also gets a 95% Student-t interval over items (each item's value averaged over seeds first): the
items, not the seeds, are what a new test set would redraw.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seap_model.audio import MelSettings
from seap_model.eval.distances import mean_interval
from seap_model.eval.protocols import spread_indices
from seap_model.eval.report import Clip, Example, Table, write_report
from seap_model.eval.scoring import by_category
from seap_model.eval.studies import spread

SYSTEM_NAMES = {
    "seap": "SEAP",
    "seap_no_reference": "SEAP, reference dropped",
    "text_only": "text-only baseline",
    "real": "real targets",
    "real_codec_vocoder": "real through codec + vocoder",
}
# The protocol tables' columns and the metric each shows.
PROTOCOL_COLUMNS = {
    "label hit": "hit",
    "style sim.": "style",
    "follow diff.": "follow",
    "target sim.": "target_similarity",
    "FD": "fd_yamnet",
    "FAD-inf": "fad_inf_yamnet",
    "KID": "kid_yamnet",
    "KAD": "kad_yamnet",
    "KL softmax": "kl_softmax_yamnet",
    "KL sigmoid": "kl_sigmoid_yamnet",
    "IS": "is_yamnet",
}
HEADLINE = ("hit", "style", "follow", "target_similarity", "fad_inf_yamnet", "kid_yamnet", "kl_softmax_yamnet")


def scalars(per_item: dict[str, np.ndarray], distribution: dict[str, float]) -> dict[str, float]:
    """Per-item scores averaged over items, next to the set-level distribution metrics."""
    return {**{k: float(np.mean(v)) for k, v in per_item.items()}, **distribution}


@dataclass
class Tables:
    items: int
    seeds: list[int]
    chance: float
    split: str = "test"
    runs: dict[tuple[str, str], dict[int, tuple[dict, dict]]] = field(default_factory=dict)
    ratio: dict | None = None
    conflict: dict | None = None
    unseen: dict[str, dict] = field(default_factory=dict)
    memorisation: dict | None = None
    sweeps: dict[str, list[dict]] = field(default_factory=dict)

    def add_seed(self, protocol: str, system: str, seed: int, per_item: dict, distribution: dict) -> None:
        self.runs.setdefault((protocol, system), {})[seed] = (per_item, distribution)

    def aggregate(self) -> dict:
        """protocol -> system -> metric -> {mean, std, per_seed}; the follow difference also with its interval."""
        out: dict = {}
        for (protocol, system), by_seed in self.runs.items():
            per_seed = [scalars(*by_seed[s]) for s in sorted(by_seed)]
            row = {
                k: dict(zip(("mean", "std"), spread([p[k] for p in per_seed])), per_seed=[p[k] for p in per_seed])
                for k in per_seed[0]
            }
            if "follow" in by_seed[sorted(by_seed)[0]][0]:
                per_item = np.mean([by_seed[s][0]["follow"] for s in by_seed], axis=0)
                mean, half, _ = mean_interval(per_item)
                row["follow"].update(ci95=[mean - half, mean + half], items=len(per_item))
            out.setdefault(protocol, {})[system] = row
        for protocol, systems in out.items():
            if "seap" in systems and "text_only" in systems:
                for key, paired in self.paired(protocol, "seap", "text_only").items():
                    systems["seap"][key]["minus_text_only"] = paired
        return out

    def paired(self, protocol: str, system: str, baseline: str) -> dict[str, dict]:
        """Per-item differences ``system`` minus ``baseline`` on the same items and sampling seeds (each item's
        difference averaged over the seeds both ran): mean and 95% interval over items, per per-item metric."""
        a, b = self.runs[(protocol, system)], self.runs[(protocol, baseline)]
        seeds = sorted(set(a) & set(b))
        out = {}
        for key in a[seeds[0]][0].keys() & b[seeds[0]][0].keys():
            diff = np.mean([np.asarray(a[s][0][key], float) - np.asarray(b[s][0][key], float) for s in seeds], axis=0)
            mean, half, _ = mean_interval(diff)
            out[key] = {"mean": mean, "ci95": [mean - half, mean + half], "items": len(diff), "seeds": seeds}
        return out

    def per_item(self) -> dict[str, dict[str, list[float]]]:
        """Every per-item score as rendered: ``protocol/system/seed`` -> metric -> one value per item (in item
        order), so runs evaluated on the same items can be paired later (``experiments/seeds.py``)."""
        return {
            f"{protocol}/{system}/{seed}": {k: [float(x) for x in np.asarray(v)] for k, v in scores.items()}
            for (protocol, system), by_seed in self.runs.items()
            for seed, (scores, _) in sorted(by_seed.items())
        }

    def per_category(self, labels: list[str]) -> dict[str, dict[str, dict]]:
        """Transfer protocol (paper when transfer is off), seed-averaged per-item scores by label."""
        protocol = "transfer" if any(p == "transfer" for p, _ in self.runs) else "paper"
        out = {}
        for (p, system), by_seed in self.runs.items():
            if p != protocol:
                continue
            keys = by_seed[sorted(by_seed)[0]][0]
            averaged = {k: np.mean([by_seed[s][0][k] for s in by_seed], axis=0) for k in keys}
            out[system] = by_category(averaged, labels)
        return {"protocol": protocol, "systems": out}

    def metrics(self) -> dict:
        """The headline numbers (``dvc metrics show`` / ``dvc exp show``)."""
        head: dict = {"items": self.items, "seeds": len(self.seeds), "chance_hit": self.chance}
        for protocol, systems in self.aggregate().items():
            for system, row in systems.items():
                entry = {}
                for k in HEADLINE:
                    if k in row:
                        entry[k], entry[f"{k}_std"] = row[k]["mean"], row[k]["std"]
                if "ci95" in row.get("follow", {}):
                    entry["follow_ci95_low"], entry["follow_ci95_high"] = row["follow"]["ci95"]
                for k in ("follow", "style", "hit"):
                    if "minus_text_only" in row.get(k, {}):
                        paired = row[k]["minus_text_only"]
                        entry[f"{k}_minus_text_only"] = paired["mean"]
                        entry[f"{k}_minus_text_only_ci95_low"], entry[f"{k}_minus_text_only_ci95_high"] = paired["ci95"]
                head.setdefault(protocol, {})[system] = entry
        if self.ratio and "reference swapped" in self.ratio and "ratio_log_mel" in self.ratio["reference swapped"]:
            head["swap_over_seed_ratio"] = self.ratio["reference swapped"]["ratio_log_mel"]
        if self.conflict:
            head["conflict"] = {k: self.conflict["seap"][k] for k in ("prompt_label_hit", "reference_label_hit")}
        return head

    def everything(self, labels: list[str]) -> dict:
        return {
            "items": self.items,
            "split": self.split,
            "seeds": self.seeds,
            "chance_hit": self.chance,
            "protocols": self.aggregate(),
            "reference_ratio": self.ratio,
            "conflict": self.conflict,
            "unseen": self.unseen,
            "memorisation": self.memorisation,
            "sweeps": self.sweeps,
            "per_category": self.per_category(labels),
            "item_labels": list(labels),
            "per_item": self.per_item(),
        }

    def tables(self, labels: list[str]) -> list[Table]:
        """The tables of ``tables.md`` and the report, built once: one per protocol, then the studies that ran."""
        agg = self.aggregate()
        out = [self._protocol_table(protocol, systems) for protocol, systems in agg.items()]
        studies = (
            self._follow_table(agg),
            self._ratio_table(),
            self._conflict_table(),
            self._unseen_table(agg),
            self._memorisation_table(),
            self._category_table(labels),
        )
        return out + [t for t in studies if t is not None]

    def _protocol_table(self, protocol: str, systems: dict) -> Table:
        rows = [(SYSTEM_NAMES[s], *(_pm(row.get(k)) for k in PROTOCOL_COLUMNS.values())) for s, row in systems.items()]
        return Table(
            f"{protocol} protocol: mean ± std over {len(self.seeds)} sampling seeds",
            ("system", *PROTOCOL_COLUMNS),
            tuple(rows),
            f"{self.items} items (one per {self.split} scene and label). Chance label hit {self.chance:.3f}. Style "
            "similarity: cosine of YAMNet embeddings of output and given reference (not the conditioning "
            "encoder). FD, FAD-inf, KID, KAD on YAMNet 1024-d embeddings against the real targets; KL paired "
            "with each item's target, IS on YAMNet posteriors. FD with fewer clips than dimensions is "
            "dominated by bias: read FAD-inf and KID.",
        )

    def _follow_table(self, agg: dict) -> Table | None:
        transfer = agg.get("transfer", {})
        follow = [(SYSTEM_NAMES[s], _pm(r["follow"]), _ci(r["follow"])) for s, r in transfer.items()]
        if not follow:
            return None
        paired = transfer.get("seap", {}).get("follow", {}).get("minus_text_only")
        if paired:
            follow.append(("SEAP minus text-only, per item", _fmt(paired["mean"]), _ci(paired)))
        return Table(
            "follow-its-own-reference (transfer)",
            ("system", "own − other recordings (mean ± std over seeds)", "95% interval over items"),
            tuple(follow),
            f"Per item: style similarity to the given reference minus the mean similarity to references of the "
            f"same label from other recordings; {self.items} items. Positive: the output follows its reference.",
        )

    def _ratio_table(self) -> Table | None:
        if not self.ratio:
            return None
        rows = tuple(
            (k, _fmt(v.get("distance_log_mel")), _fmt(v.get("ratio_log_mel")), _fmt(v.get("ratio_style")))
            for k, v in self.ratio.items()
            if isinstance(v, dict)
        )
        return Table(
            "how much the reference matters (transfer, SEAP)",
            ("change", "log-mel distance", "ratio to seed change (log-mel)", "ratio (style)"),
            rows,
            f"Median over {self.ratio['items']} items of the distance caused by the change (same prompt and "
            "seed) divided by the distance between two seeds (same reference). 1: as much as the noise.",
        )

    def _conflict_table(self) -> Table | None:
        c = self.conflict
        if not c:
            return None
        return Table(
            "conflict: prompt of L, reference of another label M",
            ("system", "hit L (prompt)", "hit M (reference)"),
            tuple(
                (k, _fmt(c[k]["prompt_label_hit"]), _fmt(c[k]["reference_label_hit"]))
                for k in ("seap", "without_reference")
            ),
            f"{c['items']} items, first seed; 'without_reference': the text-only baseline (or SEAP with its "
            "reference dropped) on the same prompts.",
        )

    def _unseen_table(self, agg: dict) -> Table | None:
        if not self.unseen:
            return None
        ref = agg.get("paper", {})
        rows = tuple(
            (
                SYSTEM_NAMES[s],
                _fmt(v["hit"]),
                _fmt(ref.get(s, {}).get("hit", {}).get("per_seed", [None])[0]),
                _fmt(v["style"]),
                _fmt(v.get("clap")),
            )
            for s, v in self.unseen.items()
        )
        return Table(
            "unseen captions (paper references)",
            ("system", "label hit, paraphrase", "label hit, training caption", "style sim.", "CLAP"),
            rows,
            f"{self.items} items, first seed; each label has 3 paraphrases never used in training "
            "(data/captions/unseen.csv).",
        )

    def _memorisation_table(self) -> Table | None:
        m = self.memorisation
        if not m:
            return None
        rows = tuple(
            (SYSTEM_NAMES.get(k, k), v["items"], _fmt(v["median"]), _fmt(v["p05"]), _fmt(v.get("below_real_p05")))
            for k, v in m.items()
            if isinstance(v, dict)
        )
        return Table(
            "memorisation: nearest training crop",
            ("clips", "items", "median NN distance", "5th percentile", "share below real 5th pct."),
            rows,
            f"Cosine distance of YAMNet embeddings to the nearest of {m['training_crops']} training crops. A "
            "system much nearer training crops than held-out real audio would be copying.",
        )

    def _category_table(self, labels: list[str]) -> Table | None:
        cat = self.per_category(labels)
        by_system = cat["systems"]
        systems = list(by_system)
        if not systems:
            return None
        keys = ("hit", "style", "follow")
        rows = tuple(
            (
                label,
                by_system[systems[0]][label]["items"],
                *(_fmt(by_system[s][label].get(k)) for s in systems for k in keys),
            )
            for label in sorted(by_system[systems[0]])
        )
        return Table(
            f"per category ({cat['protocol']}, seed-averaged)",
            ("label", "items", *(f"{SYSTEM_NAMES[s]}: {k}" for s in systems for k in keys)),
            rows,
            "Per-category values rest on the item counts shown: a handful each.",
        )

    def write(self, out: Path, labels: list[str]) -> list[Table]:
        tables = self.tables(labels)
        (out / "metrics.json").write_text(json.dumps(self.metrics(), indent=2) + "\n")
        (out / "tables.json").write_text(json.dumps(self.everything(labels), indent=2) + "\n")
        (out / "tables.md").write_text("\n\n".join(_markdown(t) for t in tables) + "\n")
        cat = self.per_category(labels)
        with open(out / "per_category.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["system", "label", "items", "hit", "style", "follow", "target_similarity", "kl_softmax"])
            for system, by_label in cat["systems"].items():
                for label, v in by_label.items():
                    writer.writerow(
                        [
                            system,
                            label,
                            v["items"],
                            *(_fmt(v.get(k)) for k in ("hit", "style", "follow", "target_similarity", "kl_softmax")),
                        ]
                    )
        return tables

    def headline_line(self) -> str:
        agg = self.aggregate().get("transfer") or next(iter(self.aggregate().values()))
        parts = [
            f"{SYSTEM_NAMES[s]}: hit {r['hit']['mean']:.3f}, style {r['style']['mean']:.3f}"
            + (f", follow {r['follow']['mean']:+.4f}" if "follow" in r else "")
            for s, r in agg.items()
        ]
        return (
            f"transfer ({self.items} items, {len(self.seeds)} seeds): "
            + "; ".join(parts)
            + f"; chance {self.chance:.3f}"
        )


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _pm(entry: dict | None) -> str:
    """mean ± std over seeds; a single value (the real clips: no seed) alone."""
    if not entry:
        return "–"
    return f"{entry['mean']:.4g}" if len(entry["per_seed"]) == 1 else f"{entry['mean']:.4g} ± {entry['std']:.2g}"


def _ci(entry: dict) -> str:
    return f"[{entry['ci95'][0]:+.4f}, {entry['ci95'][1]:+.4f}] ({entry['items']} items)" if "ci95" in entry else "–"


def _markdown(table: Table) -> str:
    lines = [f"### {table.title}", "", "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in table.rows]
    return "\n".join(lines + (["", table.note] if table.note else []))


def build_report(
    path: Path,
    tables: list[Table],
    figures: list[Path],
    items,
    audio: dict,
    real_waves,
    refs,
    seeds,
    count: int,
    sample_rate: int,
    mel: MelSettings,
) -> Path:
    """report.html: the tables, the sweep plot, and for ``count`` items spread over the split the prompt, the
    transfer reference, SEAP's, SEAP-without-reference's and the text-only output, and the target."""
    seed = seeds[0]
    examples = []
    for i in spread_indices(len(items), count) if count else []:
        item = items[i]
        clips = [Clip("reference (other recording)", refs(item.transfer.path).numpy(), sample_rate)]
        for key, name in (
            (("seap", "transfer", seed), "SEAP"),
            (("seap_no_reference", "", seed), "SEAP, no reference"),
            (("text_only", "", seed), "text-only"),
        ):
            if key in audio:
                clips.append(Clip(name, audio[key][i], sample_rate))
        clips.append(Clip("target (real)", real_waves[i], sample_rate))
        examples.append(Example(f"{item.id} · {item.label} (transfer, seed {seed})", item.prompt, tuple(clips)))
    intro = (
        "Every system rendered every item with the same per-item seeds, sampling steps and guidance. Transfer "
        "protocol: the prompt of label L with a reference of L cut from a different recording than the target's.\n\n"
        "Numbers are measured on the embedded corpus; intervals say how far they can be trusted."
    )
    return write_report(
        path, title="seap evaluation", intro=intro, tables=tables, figures=figures, examples=examples, mel=mel
    )
