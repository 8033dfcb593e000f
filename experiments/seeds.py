"""The reference-conditioning systems compared over training seeds on the shipped corpus (v2).

    python experiments/seeds.py run decoupled_frames 1     # train seed 1 of one system, then evaluate it
    python experiments/seeds.py table                      # every recorded run, mean +- std over seeds

Systems: ``text_only`` (finetune.style: off), ``pooled`` (the paper's adapter), ``frames`` (the paper's adapter
attending over the reference's frames), ``decoupled_frames`` (reference frames in every U-Net cross-attention:
the default), ``decoupled_frames_1800`` (the same, trained 1800 steps: corpus v1's), ``decoupled_frames_outside``
(training references from outside the denoised window); each in bf16, with an ``_fp32`` twin for CPUs without
native bf16. Every system spells out its settings, so a change of default does not change what a system name
means. Each run writes only under ``experiments/runs`` (gitignored) and drives the stage CLI the way a user would
(``seap params``, ``seap finetune``, ``seap evaluate``); a killed run resumes from the fine-tune's checkpoints.
Each finished run leaves its metrics in ``experiments/seeds/v2/<system>-seed<k>.json`` (committed: the run folders
do not outlive the machine they ran on), with its per-item transfer scores, so ``table`` pairs every system with
``text_only`` of the same training seed item by item (SEAP minus text-only, 95% interval over items) from the
records alone; ``tools/docs.py`` puts the table into docs/reference-conditioning.md.

The protocol (``EVALUATE``): ``ITEMS`` test items spread over the split (eight times the 48 of corpus v1's
pilot), sampling seeds 0 and 1, the transfer protocol and the unseen-caption paraphrases, sampled in bf16 (native on
the CPUs these run on) at 10 steps and the default guidance, spelled out so that no later default changes a record.
``experiments/seeds/*.json`` (no ``v2/``) are corpus v1's records, kept as they were measured.

    python experiments/seeds.py rescore decoupled_frames 2 train  # the same model on training scenes

    python experiments/seeds.py all        # every run and control the comparison needs, in order, missing ones only
    python experiments/seeds.py adopt decoupled_frames 0   # the main job's model, if trained exactly so

``all`` is what a session starts (a killed session's run resumes from its checkpoints when started again; a
re-scoring whose model was trained on another machine trains it again first, with the same settings and seed).
``adopt`` takes the main job's fine-tuned model (``finetune.out_dir``) as a run's model instead of training it
again, only when ``dvc status`` says that model is the committed run's output for this code and params, and
that run's fine-tune settings are this system's for this seed (paths aside, precision as resolved here).

``rescore`` evaluates a trained run again under one of ``VARIANTS`` (the seen-recordings control, a higher
style guidance, the style-guidance sweep) and records it beside the run as ``<system>-seed<k>-<variant>.json``;
the sweep's record holds its rows, and its plot goes beside it as ``.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNS = HERE / "runs"
RECORDS = HERE / "seeds" / "v2"
V1_RECORDS = HERE / "seeds"  # corpus v1 (213 clips): the records docs/reference-conditioning.md keeps as history
ITEMS = 384
BF16, FP32 = {"mixed_precision": "bf16"}, {"mixed_precision": "no"}
STEPS = 2400  # every v2 system's training length (the main job's since it was cut from 3000 for its 90 minutes)
SYSTEMS = {
    "text_only": {"finetune": {"style": "off", "steps": STEPS, **BF16}},
    "pooled": {"finetune": {"style": "cross_attention", "adapter": {"reference": "pooled"}, "steps": STEPS, **BF16}},
    # The paper's adapter over the reference's frame sequence: frames without the decoupled U-Net path.
    "frames": {"finetune": {"style": "cross_attention", "adapter": {"reference": "frames"}, "steps": STEPS, **BF16}},
    # The default cache holds reference frames (they are the default): the same cache as the main job's.
    "decoupled_frames": {
        "finetune": {"style": "decoupled", "adapter": {"reference": "frames"}, "steps": STEPS, **BF16}
    },
    # The same, trained 1800 steps (a full cosine schedule over them): on corpus v1 every 3000-step run's validation
    # loss was lowest near step 1800. It uses the default cache, which holds reference frames since they became default.
    "decoupled_frames_1800": {
        "finetune": {"style": "decoupled", "adapter": {"reference": "frames"}, "steps": 1800, **BF16}
    },
    # The same, with training references drawn from outside the window being denoised (no copying shortcut).
    "decoupled_frames_outside": {
        "finetune": {
            "style": "decoupled",
            "adapter": {"reference": "frames"},
            "reference_window": "outside",
            "cache_dir": str(RUNS / "cache_outside"),
            "steps": STEPS,
            **BF16,
        }
    },
}
# Every system above trains under bf16 autocast, as every committed record did (on CPUs with native bf16). Its
# ``<name>_fp32`` twin trains the same in fp32, for a CPU without native bf16 (AVX2 only), where bf16 is emulated
# and about 10x slower than fp32. Compare fp32 runs with fp32 runs: ``decoupled_frames_fp32`` against
# ``decoupled_frames`` measures what the precision alone changes.
SYSTEMS |= {f"{name}_fp32": {"finetune": {**s["finetune"], **FP32}} for name, s in list(SYSTEMS.items())}
VARIANTS = {  # re-scorings of a trained run (`rescore`): name -> evaluate overrides, and the table's label
    "train": ({"split": "train"}, "training split (seen recordings)"),
    "sg8": ({"sampling": {"style_guidance": 8.0}}, "style guidance 8 (text guidance 4)"),
    # The style-guidance sweep on every item, one sampling seed (the sweep scores the first seed only).
    "style_sweep": (
        {"seeds": [0], "style_guidance_sweep": [0.0, 1.0, 2.0, 4.0, 8.0], "sweep_items": ITEMS},
        "one sampling seed (style-guidance sweep)",
    ),
}
SWEEP = "style_guidance"  # a re-scoring that sweeps this over several points records the rows and the plot
EVALUATE = {  # every run's protocol; sweeps cut to one point each (`rescore ... style_sweep` sweeps)
    "seeds": [0, 1],
    "max_items": ITEMS,
    "protocols": ["transfer", "unseen"],  # what the comparison reads (the paper protocol is the evaluate stage's)
    "sampling": {"precision": "bf16", "steps": 10},  # spelled out: a later change of default changes no record
    "guidance_sweep": [4.0],
    "steps_sweep": [10],
    "reference_seconds_sweep": [2.0],
    "style_guidance_sweep": [4.0],
    "sweep_items": 8,
    "report_items": 0,
}
COLUMNS = ("hit", "style", "follow", "follow_ci95_low", "follow_ci95_high", "fad_inf_yamnet", "kid_yamnet")
PAIRED = ("follow", "style", "hit")  # per-item transfer scores a record keeps, to pair systems item by item


def head_commit() -> str:
    """The commit a record was made on (its provenance)."""
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def run_dir(system: str, seed: int) -> Path:
    return RUNS / f"{system}-seed{seed}"


def params_path(system: str, seed: int, variant: str | None = None) -> Path:
    """The params a run is trained and evaluated under, or one of its re-scorings (``VARIANTS``) evaluated under."""
    return run_dir(system, seed) / ("params.yaml" if variant is None else f"params_{variant}.yaml")


def write_params(system: str, seed: int, variant: str | None = None) -> Path:
    """Write a run's (or re-scoring's) overrides beside it and resolve them with ``seap params``; the params path."""
    out = run_dir(system, seed)
    out.mkdir(parents=True, exist_ok=True)
    spelled = out / ("overrides.yaml" if variant is None else f"overrides_{variant}.yaml")
    spelled.write_text(yaml.safe_dump(overrides(system, seed, variant), sort_keys=False))
    params = params_path(system, seed, variant)
    seap("params", "--overrides", str(spelled), "--out", str(params))
    return params


def changes(variant: str | None) -> dict:
    """The evaluate overrides a variant makes (none for the plain run)."""
    return VARIANTS[variant][0] if variant is not None else {}


def eval_dir(system: str, seed: int, variant: str | None = None) -> Path:
    return run_dir(system, seed) / ("eval" if variant is None else f"eval_{variant}")


def overrides(system: str, seed: int, variant: str | None = None) -> dict:
    out = run_dir(system, seed)
    finetune = {
        "seed": seed,
        "out_dir": str(out / "model"),
        "checkpoint_dir": str(out / "checkpoints"),
        "report_dir": str(out / "report"),
        "baseline": False,
        "baseline_dir": str(out / "no_baseline"),  # baseline: false writes its marker here, not in models/
        **SYSTEMS[system].get("finetune", {}),
    }
    sampling = {**EVALUATE["sampling"], **changes(variant).get("sampling", {})}
    evaluate = {**EVALUATE, **changes(variant), "sampling": sampling, "out_dir": str(eval_dir(system, seed, variant))}
    return {"finetune": finetune, "evaluate": evaluate}


def seap(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("seap")), *args], cwd=ROOT, check=True)


def run(system: str, seed: int) -> None:
    """Train one system at one training seed (resuming from its checkpoints), then evaluate and record it."""
    train(system, seed)
    evaluate_run(system, seed)


def train(system: str, seed: int) -> None:
    from seap_model.training.loop import native_bf16

    if SYSTEMS[system]["finetune"]["mixed_precision"] == "bf16" and not native_bf16():
        raise SystemExit(
            f"{system} trains in bf16, which this device emulates (about 10x slower than fp32): run {system}_fp32 "
            "here and compare it with fp32 runs (decoupled_frames_fp32 is the default system's)"
        )
    params = write_params(system, seed)
    if "cache_dir" in SYSTEMS[system].get("finetune", {}):
        # A system with its own cache (reference frames) encodes it first: the default cache is dvc's.
        ensure_cache(params)
    seap("finetune", "--params", str(params))


BUILT_FROM = "built_from.json"  # beside a system's own cache: the cache stage's fingerprint when it last finished


def ensure_cache(params_path: Path) -> None:
    """Encode a system's own cache unless it is current: built to the end from the same code, cache params and
    input contents (``stage_fingerprint("cache")``, which reads the global seed, not ``finetune.seed``, so every
    training seed of a system shares one cache). dvc does this for the main job's cache; these caches are not
    dvc's. The fingerprint is written only once ``seap cache`` returns, so a killed build is rebuilt."""
    from seap_model.config import load_params
    from seap_model.fingerprint import stage_fingerprint

    params = load_params(params_path)
    stamp = Path(params.finetune.cache_dir) / BUILT_FROM
    wanted = stage_fingerprint("cache", params)
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        print(f"{stamp.parent} is current (same code, cache params and inputs): not encoded again", flush=True)
        return
    stamp.unlink(missing_ok=True)
    seap("cache", "--params", str(params_path))
    stamp.write_text(json.dumps(wanted, indent=1))


PATHS = ("out_dir", "checkpoint_dir", "report_dir", "baseline", "baseline_dir")  # where a run writes, not what


def adopt(system: str, seed: int) -> None:
    """The main job's fine-tuned model as this run's, when it was trained exactly as this run would train it."""
    from seap_model.config import load_params, merge_params
    from seap_model.training.loop import resolve_precision

    status = subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), "status", "finetune", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if status.returncode != 0 or json.loads(status.stdout or "{}"):
        raise SystemExit(f"dvc status finetune is not clean ({status.stdout.strip()}): the model is not the run's")
    shipped = load_params(ROOT / "params.yaml")
    out = run_dir(system, seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overrides.yaml").write_text(yaml.safe_dump(overrides(system, seed), sort_keys=False))
    mine = merge_params(shipped, out / "overrides.yaml")

    def training(params) -> dict:
        fp = params.finetune.model_dump(mode="json", exclude=set(PATHS))
        fp["seed"] = params.seed if fp["seed"] is None else fp["seed"]
        fp["mixed_precision"] = resolve_precision(fp["mixed_precision"])
        return {"finetune": fp, **params.model_dump(mode="json", exclude={"finetune", "evaluate", "generate"})}

    theirs, ours = training(shipped), training(mine)
    differ = sorted(
        k
        for k in set(theirs["finetune"]) | set(ours["finetune"])
        if theirs["finetune"].get(k) != ours["finetune"].get(k)
    )
    if differ or {k: v for k, v in theirs.items() if k != "finetune"} != {
        k: v for k, v in ours.items() if k != "finetune"
    }:
        raise SystemExit(
            f"the main job trained another model than {system} seed {seed} (differs in {differ or 'params'})"
        )
    shutil.rmtree(out / "model", ignore_errors=True)
    shutil.copytree(ROOT / shipped.finetune.out_dir, out / "model")
    commit = head_commit()
    (out / "adopted.json").write_text(json.dumps({"from": shipped.finetune.out_dir, "commit": commit}) + "\n")
    print(f"{out / 'model'}: the main job's model (dvc status clean, same training settings)")


# The comparison the issue asks for, in the order a session works through it: the default and text-only first
# (the headline pairs), then the paper's adapter and the outside-window variant, then the seen-recordings control.
PLAN = [
    *((name, seed, None) for seed in (0, 1, 2) for name in ("decoupled_frames", "text_only")),
    *((name, seed, None) for name in ("pooled", "decoupled_frames_outside") for seed in (0, 1, 2)),
    *(("decoupled_frames", seed, "train") for seed in (0, 1, 2)),
]


def run_all() -> None:
    """Every step of ``PLAN`` whose record is missing, in order (a trained run resumes or is skipped)."""
    for system, seed, variant in PLAN:
        if record_path(system, seed, variant).exists():
            continue
        print(f"== {system} seed {seed}" + (f" ({variant})" if variant else ""), flush=True)
        if variant is not None:
            if not (run_dir(system, seed) / "model").is_dir():  # recorded on another machine: train it again here
                train(system, seed)
            rescore(system, seed, variant)
        elif (run_dir(system, seed) / "adopted.json").exists():
            evaluate_run(system, seed)
        else:
            run(system, seed)


def evaluate_run(system: str, seed: int) -> None:
    """Evaluate a run's model (trained or adopted) under the protocol and record it."""
    seap("evaluate", "--params", str(write_params(system, seed)))
    record(system, seed)


def rescore(system: str, seed: int, variant: str) -> None:
    """Evaluate a trained run again under one of ``VARIANTS``; the model is not touched."""
    out = run_dir(system, seed)
    if not (out / "model").is_dir():
        raise SystemExit(f"{out / 'model'}: no trained model; run `seeds.py run {system} {seed}` first")
    seap("evaluate", "--params", str(write_params(system, seed, variant)))
    record(system, seed, variant)


def record_path(system: str, seed: int, variant: str | None = None) -> Path:
    return RECORDS / (f"{system}-seed{seed}.json" if variant is None else f"{system}-seed{seed}-{variant}.json")


def record(system: str, seed: int, variant: str | None = None) -> None:
    """Copy one finished run's transfer metrics (and, for a plain run, its per-item transfer scores averaged over
    the sampling seeds) into its committed record."""
    folder = eval_dir(system, seed, variant)
    path = folder / "metrics.json"
    if not path.exists():
        raise SystemExit(f"{path}: no metrics; run `seeds.py run {system} {seed}` first")
    data = json.loads(path.read_text())
    tables = json.loads((folder / "tables.json").read_text())
    row = {name: data["transfer"]["seap"][name] for name in COLUMNS}
    # The swap ratio is measured on SEAP with a reference; a text-only model has none to swap.
    swaps = system != "text_only"
    row["swap_over_seed_ratio"] = data.get("swap_over_seed_ratio") if swaps else None
    # The same median ratio in the style evaluator's embedding (tables.json), beside the log-mel one.
    ratio = tables.get("reference_ratio") or {}
    row["swap_style_ratio"] = ratio.get("reference swapped", {}).get("ratio_style") if swaps else None
    row["unseen_hit"] = (tables.get("unseen") or {}).get("seap", {}).get("hit")
    commit = head_commit()
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    provenance = {"metrics": str(where), "commit": commit, "recorded": datetime.now(UTC).isoformat()}
    RECORDS.mkdir(parents=True, exist_ok=True)
    body = {"system": system, "training_seed": seed, "variant": variant, "evaluate": changes(variant), "metrics": row}
    runs = [v for k, v in (tables.get("per_item") or {}).items() if k.startswith("transfer/seap/")]
    if variant is None and runs:
        body["per_item"] = {k: [statistics.fmean(x) for x in zip(*(r[k] for r in runs))] for k in PAIRED}
    if len(changes(variant).get(f"{SWEEP}_sweep", ())) > 1:
        with open(folder / "sweeps" / f"{SWEEP}.csv", newline="") as f:
            body[f"{SWEEP}_sweep"] = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
        shutil.copyfile(folder / "sweeps.png", record_path(system, seed, variant).with_suffix(".png"))
    record_path(system, seed, variant).write_text(json.dumps({**body, "provenance": provenance}, indent=2) + "\n")


def differences(system: str, seed: int, records: Path | None = None, against: str = "text_only") -> dict[str, list]:
    """``system`` minus ``against`` of the same training seed, item by item (same items, sampling seeds and
    references): metric -> per-item differences; empty when either record is missing or lacks per-item scores."""
    folder = records or RECORDS
    paths = [folder / record_path(name, seed).name for name in (system, against)]
    if not all(p.exists() for p in paths):
        return {}
    a, b = (json.loads(p.read_text()).get("per_item") for p in paths)
    if not a or not b or len(a["follow"]) != len(b["follow"]):
        return {}
    return {key: [x - y for x, y in zip(a[key], b[key])] for key in PAIRED}


def mean_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and its 95% t-interval over ``values`` (items); the interval is the mean itself for one value."""
    mean, half = statistics.fmean(values), 0.0
    if len(values) > 1:
        from scipy import stats

        half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def paired(
    system: str, seed: int, records: Path | None = None, against: str = "text_only"
) -> dict[str, tuple[float, float, float, int]]:
    """``differences`` summarised: metric -> (mean, 95% low, 95% high, items)."""
    return {key: (*mean_ci95(d), len(d)) for key, d in differences(system, seed, records, against).items()}


def paired_table(records: Path | None = None, against: str = "text_only", systems: Sequence[str] | None = None) -> str:
    """Each system (default: every one but text-only) minus ``against`` of the same training seed, per item; then
    mean +- std over training seeds."""
    lines = ["| system | training seed | " + " | ".join(f"{k} − {against} [95% over items]" for k in PAIRED) + " |"]
    lines.append("|---|---|" + "---|" * len(PAIRED))
    for system in systems or [name for name in SYSTEMS if not name.startswith("text_only")]:
        rows = {seed: p for seed in (0, 1, 2) if (p := paired(system, seed, records, against))}
        for seed, p in rows.items():
            cells = " | ".join(f"{fmt(p[k][0])} [{p[k][1]:+.4f}, {p[k][2]:+.4f}] ({p[k][3]})" for k in PAIRED)
            lines.append(f"| {system} | {seed} | {cells} |")
        if len(rows) > 1:
            cells = " | ".join(
                f"{statistics.mean(v):.4g} ± {statistics.stdev(v):.2g}"
                for v in ([p[k][0] for p in rows.values()] for k in PAIRED)
            )
            lines.append(f"| **{system}** | mean ± std ({len(rows)}) | {cells} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def metrics(system: str, seed: int, variant: str | None = None, records: Path | None = None) -> dict | None:
    path = (records or RECORDS) / record_path(system, seed, variant).name
    return json.loads(path.read_text())["metrics"] if path.exists() else None


def table(records: Path | None = None) -> str:
    """Every recorded run of ``records`` (default ``RECORDS``), then each system's mean +- std over seeds."""
    names = (*COLUMNS, "swap_over_seed_ratio", "swap_style_ratio", "unseen_hit")
    lines = [
        "| system | training seeds | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for system in SYSTEMS:
        rows = {seed: m for seed in (0, 1, 2) if (m := metrics(system, seed, records=records)) is not None}
        for seed, row in rows.items():
            lines.append(f"| {system} | {seed} | " + " | ".join(fmt(row.get(n)) for n in names) + " |")
        if len(rows) > 1:
            cells = []
            for n in names:
                values = [r[n] for r in rows.values() if r.get(n) is not None]
                if len(values) < 2:
                    cells.append("–")
                    continue
                spread = f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g} ({len(values)})"
                cells.append(spread)
            lines.append(f"| **{system}** | mean ± std ({len(rows)}) | " + " | ".join(cells) + " |")
    for variant, (_, label) in VARIANTS.items():  # re-scorings (`seeds.py rescore`), one row per run
        for system in SYSTEMS:
            for seed in (0, 1, 2):
                if (row := metrics(system, seed, variant, records)) is not None:
                    cells = " | ".join(fmt(row.get(n)) for n in names)
                    lines.append(f"| {system}, {label} | {seed} | {cells} |")
    return "\n".join(lines) + "\n" + ("\n" + paired_table(records) if paired_table(records) else "")


def fmt(value) -> str:
    return "–" if value is None else f"{value:.4g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run")
    one.add_argument("system", choices=sorted(SYSTEMS))
    one.add_argument("seed", type=int)
    again = sub.add_parser("record")
    again.add_argument("system", choices=sorted(SYSTEMS))
    again.add_argument("seed", type=int)
    again.add_argument("--variant", choices=sorted(VARIANTS))
    other = sub.add_parser("rescore")
    other.add_argument("system", choices=sorted(SYSTEMS))
    other.add_argument("seed", type=int)
    other.add_argument("variant", choices=sorted(VARIANTS))
    sub.add_parser("table")
    sub.add_parser("all")
    take = sub.add_parser("adopt")
    take.add_argument("system", choices=sorted(SYSTEMS))
    take.add_argument("seed", type=int)
    args = parser.parse_args()
    if args.command == "run":
        run(args.system, args.seed)
    elif args.command == "all":
        run_all()
    elif args.command == "adopt":
        adopt(args.system, args.seed)
    elif args.command == "rescore":
        rescore(args.system, args.seed, args.variant)
    elif args.command == "record":
        record(args.system, args.seed, args.variant)
    print(table())


if __name__ == "__main__":
    main()
