"""The bars the corpus-v2 comparison was set (issue: "a reference that generalises to recordings never trained on"),
checked against the committed records of ``experiments/seeds.py`` alone; ``tools/docs.py`` puts the table into
docs/reference-conditioning.md.

Each row: what is measured (mean ± std over training seeds, or a per-item interval), the bar, and whether it is
met, missed, or still pending (fewer than the three training seeds recorded: the figure shown is what there is).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from experiments import seeds

DEFAULT, TEXT = "decoupled_frames", "text_only"
SEEDS = (0, 1, 2)


def values(system: str, key: str, records: Path, variant: str | None = None) -> list[float]:
    rows = (seeds.metrics(system, s, variant, records) for s in SEEDS)
    return [row[key] for row in rows if row is not None and row.get(key) is not None]


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None


def shown(xs: list[float]) -> str:
    m, s = mean_std(xs)
    if m is None:
        return "–"
    return f"{m:.4g}" + (f" ± {s:.2g}" if s is not None else "") + f" ({len(xs)})"


def verdict(ok: bool | None, n: int) -> str:
    if ok is None:
        return "pending (no record)"
    word = "met" if ok else "missed"
    return word if n >= len(SEEDS) else f"{word} so far ({n} of {len(SEEDS)} seeds)"


def pooled_follow(records: Path, system: str = DEFAULT) -> tuple[float, float, float, int] | None:
    """``system`` minus text-only per item, each item's difference averaged over the training seeds both have; the
    mean and its 95% interval over items, and the seed count."""
    pairs = [d["follow"] for s in SEEDS if (d := seeds.differences(system, s, records, TEXT))]
    if not pairs or len({len(p) for p in pairs}) != 1:
        return None
    return (*seeds.mean_ci95([statistics.fmean(col) for col in zip(*pairs)]), len(pairs))


def goals(records: Path | None = None, system: str = DEFAULT) -> str:
    """The bars for ``system`` (default: the shipped default's) against text-only, from the records alone."""
    records = records or seeds.RECORDS
    rows: list[tuple[str, str, str, str]] = []

    ratio = values(system, "swap_over_seed_ratio", records)
    m, _ = mean_std(ratio)
    rows.append(
        (
            "reference swap / seed change, median log-mel ratio, test recordings",
            shown(ratio),
            ">= 1.0",
            verdict(None if m is None else m >= 1.0, len(ratio)),
        )
    )

    style_d, style_t = values(system, "style", records), values(TEXT, "style", records)
    (md, sd), (mt, st) = mean_std(style_d), mean_std(style_t)
    if md is not None and mt is not None and sd is not None and st is not None:
        bar = 3 * max(sd, st)
        rows.append(
            (
                "style similarity, SEAP − text-only",
                f"{md - mt:.4g}",
                f">= 3 × larger seed std ({bar:.3g})",
                verdict(md - mt >= bar, min(len(style_d), len(style_t))),
            )
        )
    else:
        rows.append(("style similarity, SEAP − text-only", "–", ">= 3 × larger seed std", verdict(None, 0)))

    for s in SEEDS:
        p = seeds.paired(system, s, records).get("follow")
        if p is not None:
            rows.append(
                (
                    f"follow, SEAP − text-only per item, training seed {s}",
                    f"{p[0]:.4g} [{p[1]:.4g}, {p[2]:.4g}] ({p[3]} items)",
                    "95% interval above 0",
                    "met" if p[1] > 0 else "missed",
                )
            )
    pooled = pooled_follow(records, system)
    if pooled is not None:
        m, lo, hi, n = pooled
        rows.append(
            (
                "follow, SEAP − text-only per item, averaged over training seeds",
                f"{m:.4g} [{lo:.4g}, {hi:.4g}]",
                "95% interval above 0",
                verdict(lo > 0, n),
            )
        )

    for key, label in (("hit", "label hit"), ("unseen_hit", "label hit, unseen-caption paraphrases")):
        d, t = values(system, key, records), values(TEXT, key, records)
        (md, sd), (mt, st) = mean_std(d), mean_std(t)
        if md is None or mt is None:
            rows.append((f"{label}, SEAP − text-only", "–", ">= −(larger seed std)", verdict(None, 0)))
            continue
        noise = max(x for x in (sd, st, 0.0) if x is not None)
        rows.append(
            (
                f"{label}, SEAP − text-only",
                f"{md - mt:.4g}",
                f">= −{noise:.3g} (larger seed std)",
                verdict(md - mt >= -noise, min(len(d), len(t))),
            )
        )
    for key, label in (("fad_inf_yamnet", "FAD-infinity"), ("kid_yamnet", "KID")):
        d, t = values(system, key, records), values(TEXT, key, records)
        (md, _), (mt, st) = mean_std(d), mean_std(t)
        if md is None or mt is None or st is None:
            rows.append((f"{label}, SEAP (text-only)", "–", "<= text-only mean + its seed std", verdict(None, 0)))
            continue
        rows.append(
            (
                f"{label}, SEAP (text-only)",
                f"{shown(d)} ({shown(t)})",
                f"<= {mt + st:.4g}",
                verdict(md <= mt + st, min(len(d), len(t))),
            )
        )

    seen = values(system, "swap_over_seed_ratio", records, "train")
    rows.append(
        ("control: the same ratio on training recordings (seen)", shown(seen), "(the gap to the first row)", "")
    )
    lines = ["| goal | measured | bar | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"
