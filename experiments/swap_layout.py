"""What a reference swap moves, layout or timbre: the swap/seed ratio split into its two parts.

    python experiments/swap_layout.py decoupled_frames 1            # a trained run of experiments/seeds.py
    python experiments/swap_layout.py decoupled_frames 1 --items 96
    python experiments/swap_layout.py decoupled_frames 1 --variant train   # a re-scoring's scenes (seen recordings)

The evaluation's swap ratio (median over items of the log-mel distance a reference swap causes, over the distance
a change of sampling seed causes) compares whole spectrograms frame by frame, so it counts *when* sound happens
as much as *what it sounds like*. The hypothesis this tests: the reference sets the timbre, the seed sets the
layout (event onsets and envelope), so the frame-by-frame ratio stays below 1 even where the reference moves the
timbre more than a seed does. The same renders (the run's own model, items, references, sampling and seeds,
exactly as ``seap evaluate`` renders its swap study) are compared three ways:

* ``frames``: RMS over mel bands and frames (the evaluation's own distance; its ratio must match the record's);
* ``spectrum``: RMS over mel bands of the time-averaged log-mel (the long-term spectrum: timbre, blind to layout);
* ``envelope``: RMS over frames of the band-averaged log-mel, each clip's mean level removed (layout, blind to
  timbre and loudness).

The record goes beside the run's: ``experiments/seeds/v2/<system>-seed<k>[-<variant>]-swap_layout.json`` (median
ratios with 95% bootstrap intervals over items, and the item count); ``--variant`` renders under the params of one
of ``seeds.VARIANTS`` that ``seeds.py rescore`` wrote (``train``: training scenes with references from other
training recordings, the seen-recordings control).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.seeds import RECORDS, SYSTEMS, VARIANTS, head_commit, params_path, record_path

VIEWS = ("frames", "spectrum", "envelope")


def distances(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Per pair of log-mel spectrograms [N, mels, frames]: the three distances of ``VIEWS``, each [N]."""
    # Imported here as in measure(): importing this module (tools/docs.py reads table()) loads no torch.
    from seap_model.eval.scoring import log_mel_distance

    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"need two [N, mels, frames] arrays of one shape, got {a.shape} and {b.shape}")
    envelope_a, envelope_b = a.mean(axis=1), b.mean(axis=1)  # [N, frames]
    envelope_a = envelope_a - envelope_a.mean(axis=1, keepdims=True)
    envelope_b = envelope_b - envelope_b.mean(axis=1, keepdims=True)
    return {
        "frames": log_mel_distance(a, b),  # the evaluation's own distance
        "spectrum": np.sqrt(((a.mean(axis=2) - b.mean(axis=2)) ** 2).mean(axis=1)),
        "envelope": np.sqrt(((envelope_a - envelope_b) ** 2).mean(axis=1)),
    }


def ratios(base: np.ndarray, other_seed: np.ndarray, swapped: np.ndarray, seed: int = 0) -> dict[str, dict]:
    """Per view: median over items of swap distance / seed distance, with a 95% bootstrap interval over items."""
    by_seed, by_swap = distances(base, other_seed), distances(base, swapped)
    out = {}
    for view in VIEWS:
        ratio = by_swap[view] / np.maximum(by_seed[view], 1e-9)
        interval = stats.bootstrap(
            (ratio,), np.median, confidence_level=0.95, n_resamples=2000, method="percentile", random_state=seed
        ).confidence_interval
        out[view] = {
            "ratio": float(np.median(ratio)),
            "ci95_low": float(interval.low),
            "ci95_high": float(interval.high),
            "swap_distance": float(np.median(by_swap[view])),
            "seed_distance": float(np.median(by_seed[view])),
        }
    return out


def measure(system: str, seed: int, items: int | None, variant: str | None = None) -> dict:
    """Render the run's swap study again (both sampling seeds, then the swap) and split its ratio."""
    from seap_model.audio import LogMel
    from seap_model.config import load_params
    from seap_model.eval.backends import load_systems
    from seap_model.eval.protocols import build_items
    from seap_model.eval.render import References, log_mels, render
    from seap_model.generation import resolved

    path = params_path(system, seed, variant)
    if not path.exists():
        raise SystemExit(f"{path}: missing; run `seeds.py {'run' if variant is None else 'rescore'}` for it first")
    params = load_params(path)
    ev = params.evaluate
    if len(ev.seeds) < 2:
        raise SystemExit(f"{path}: evaluate.seeds has one seed ({ev.seeds}); the ratio needs two to compare")
    chosen = build_items(params.data.serst_dir, items or ev.max_items, ev.split)
    pipe = load_systems(params.finetune.out_dir, params.finetune.baseline_dir)["seap"]
    seconds = ev.sampling.duration or params.finetune.train_seconds
    sampling = resolved(pipe, ev.sampling.model_copy(update={"duration": seconds}))
    refs, logmel = References(params.audio.sample_rate), LogMel(params.audio.mel())
    ids, prompts = [i.id for i in chosen], [i.prompt for i in chosen]
    transfer = [refs(i.transfer.path) for i in chosen]
    first, second = ev.seeds[0], ev.seeds[1]
    base = render(pipe, ids, prompts, transfer, first, sampling, ev.batch_size, f"seed {first}")
    other = render(pipe, ids, prompts, transfer, second, sampling, ev.batch_size, f"seed {second}")
    alternatives = [refs(i.alternative.path) for i in chosen]
    swapped = render(pipe, ids, prompts, alternatives, first, sampling, ev.batch_size, "swap")
    return {"items": len(chosen), **ratios(*(log_mels(w, logmel) for w in (base, other, swapped)))}


def scenes(variant: str | None) -> str:
    return "test split (unseen recordings)" if variant is None else VARIANTS[variant][1]


def table(records: Path | None = None) -> str:
    """Every recorded split (``*-swap_layout.json``): the median swap/seed ratio per view, 95% over items."""
    folder = records or RECORDS
    bodies = [json.loads(p.read_text()) for p in sorted(folder.glob("*-swap_layout.json"))]
    if not bodies:
        return ""
    head = " | ".join(f"{v} ratio [95%]" for v in VIEWS)
    lines = [
        f"| system | scenes | training seed | items | {head} | the evaluation's ratio |",
        "|---|---|---|---|---|" + "---|" * len(VIEWS),
    ]
    for body in bodies:
        m, variant = body["metrics"], body.get("variant")
        cells = " | ".join(f"{m[v]['ratio']:.3g} [{m[v]['ci95_low']:.3g}, {m[v]['ci95_high']:.3g}]" for v in VIEWS)
        # The run's committed evaluation record (seeds.py) beside it: on the same items its ratio is the frames view's.
        scored = folder / record_path(body["system"], body["training_seed"], variant).name
        own = f"{json.loads(scored.read_text())['metrics']['swap_over_seed_ratio']:.3g}" if scored.exists() else "–"
        lines.append(
            f"| {body['system']} | {scenes(variant)} | {body['training_seed']} | {m['items']} | {cells} | {own} |"
        )
    return "\n".join(lines) + "\n" + over_seeds(bodies)


def over_seeds(bodies: list[dict]) -> str:
    """Each system and scenes measured on more than one training seed: each view's ratio, mean ± std over seeds."""
    runs: dict[tuple, dict[int, dict]] = {}
    for body in bodies:
        runs.setdefault((body["system"], body.get("variant")), {})[body["training_seed"]] = body["metrics"]
    rows = []
    for (system, variant), by_seed in runs.items():
        if len(by_seed) < 2:
            continue
        cells = " | ".join(
            f"{statistics.mean(r):.3g} ± {statistics.stdev(r):.2g}"
            for r in ([m[v]["ratio"] for m in by_seed.values()] for v in VIEWS)
        )
        rows.append(f"| {system} | {scenes(variant)} | {', '.join(map(str, sorted(by_seed)))} | {cells} |")
    if not rows:
        return ""
    head = " | ".join(f"{v} ratio" for v in VIEWS)
    lines = [
        "",
        "Over training seeds (mean ± std of the per-run medians):",
        "",
        f"| system | scenes | training seeds | {head} |",
        "|---|---|---|" + "---|" * len(VIEWS),
        *rows,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("seed", type=int)
    parser.add_argument("--items", type=int, help="fewer items than the run's evaluation (default: all of them)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="a re-scoring's params instead of the run's")
    args = parser.parse_args()
    if args.system.startswith("text_only"):
        raise SystemExit("a text-only model has no reference to swap")
    result = measure(args.system, args.seed, args.items, args.variant)
    body = {
        "system": args.system,
        "training_seed": args.seed,
        "variant": args.variant,
        "metrics": result,
        "provenance": {"commit": head_commit(), "recorded": datetime.now(UTC).isoformat()},
    }
    beside = record_path(args.system, args.seed, args.variant)  # the run's (or re-scoring's) own record
    path = beside.with_name(f"{beside.stem}-swap_layout.json")
    path.write_text(json.dumps(body, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
