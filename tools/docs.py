"""Write the generated blocks of README.md and docs/*.md from the committed records and the package tree.

    python tools/docs.py            # rewrite every block in place
    python tools/docs.py --check    # exit 1, naming each file, when a committed doc differs from what this writes

A block is ``<!-- generated: NAME -->`` ... ``<!-- /generated -->``; its body is ``GENERATORS[NAME](root)``. Every
measured number in the docs comes through here from a record (``outputs/``, ``experiments/seeds/``,
``results/generation.json``, ``results/vocoder.json``, ``params.yaml``), rounded here at a stated precision
(4 significant digits, a std 2), so a doc cannot drift from its record: the test runs ``--check``. The stage
table comes from the stage registry and the code layout from the first docstring line of each module, so both
follow refactors. ``--root`` points at another copy of the tree (the test changes a record in a copy and
expects the check to fail).
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from experiments import seeds, seeds_goals, swap_layout  # noqa: E402  (the seed tables are the seed tools' own)
from seap_model.config import load_params  # noqa: E402
from seap_model.stages import STAGES, resolve_path  # noqa: E402
from tools import faults  # noqa: E402  (the fault table is the fault tool's own)

BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)
LAYOUT = ("seap_model", "flows", "tasks", "benchmarks", "experiments", "tools")  # the code layout's roots


def fmt(value: object) -> str:
    """One number at the docs' precision: 4 significant digits (the seed tool's format), '–' for none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "–" if value is None else str(value)
    return str(value) if isinstance(value, int) else seeds.fmt(value)


def pm(mean: float, std: float | None) -> str:
    """Mean at the docs' precision ± std at 2 significant digits (the seed tool's spread format)."""
    return fmt(mean) if std is None else f"{fmt(mean)} ± {std:.2g}"


def spread(values: Sequence[float]) -> str:
    """Mean ± sample std of ``values``, with the count."""
    return f"{pm(statistics.mean(values), statistics.stdev(values))} ({len(values)})"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def load(root: Path, path: str) -> dict:
    return json.loads((root / path).read_text())


def docstring_line(path: Path) -> str:
    """The first sentence of a module's (or package's ``__init__``'s) docstring, in markdown; '' when it has none.
    (A sentence, not a line: docstrings wrap mid-sentence.)"""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    sentence = re.match(r"(.+?\.)(\s|$)", paragraph)
    return (sentence[1] if sentence else paragraph).replace("``", "`")


# ---- from the code


def stages(root: Path) -> str:
    """The stage table from the registry: stage, module, what it does, what it writes (resolved from params.yaml;
    several outputs in one folder are shown as the folder)."""
    params = load_params(root / "params.yaml")
    rows = []
    for stage in STAGES:
        paths = [Path(resolve_path(out.path, params)) for out in stage.outs]
        parents = [path.parent for path in paths]
        shown = dict.fromkeys(f"{p.parent}/" if parents.count(p.parent) > 1 else str(p) for p in paths)
        module = f"`{stage.module.replace('.', '/')}.py`"
        rows.append((f"`{stage.name}`", module, stage.help, ", ".join(f"`{p}`" for p in shown)))
    return table(("stage", "module", "what it does", "writes"), rows)


def modules(root: Path) -> list[Path]:
    """Every module under the layout's roots (run folders and tests excluded), packages as their ``__init__``."""
    paths = (path for top in LAYOUT for path in sorted((root / top).rglob("*.py")))
    return [path for path in paths if "runs" not in path.parts and not path.name.startswith("test_")]


def described(root: Path, path: Path) -> tuple[str, str]:
    """A module's row: its path (a package as its folder) and its docstring's first line; a package without one
    is described by the names of its modules."""
    folder = path.parent if path.name == "__init__.py" else None
    what = docstring_line(path)
    if folder is not None and not what:
        what = "modules: " + ", ".join(sorted(p.stem for p in folder.glob("*.py") if p.name != "__init__.py"))
    return f"`{(folder or path).relative_to(root).as_posix()}`", what


def layout(root: Path) -> str:
    """README's layout: each ``seap_model`` package and top-level module, then each other root folder once (its
    package docstring, or the names of its modules); docs/development.md lists every module."""
    inside = [p for p in modules(root) if p.relative_to(root).parts[0] == "seap_model"]
    keep = [p for p in inside if len(p.relative_to(root).parts) == 2]
    keep += [p for p in inside if len(p.relative_to(root).parts) == 3 and p.name == "__init__.py"]
    keep = sorted(set(keep), key=lambda p: (str(p.parent), p.name))
    rows = [described(root, p) for p in keep]
    for top in LAYOUT[1:]:
        init = root / top / "__init__.py"
        what = docstring_line(init) if init.exists() else ""
        names = sorted(p.stem for p in (root / top).glob("*.py") if p.name != "__init__.py")
        rows.append((f"`{top}/`", what or "modules: " + ", ".join(names)))
    return table(("where", "what"), rows)


def layout_modules(root: Path) -> str:
    """Every module with its docstring's first line (docs/development.md)."""
    return table(("module", "what"), (described(root, p) for p in modules(root)))


# ---- from outputs/ (the committed dvc run)


def evaluation_tables(root: Path) -> str:
    """evaluate's own tables (outputs/evaluate/tables.md), headings moved under the doc's section."""
    return (root / "outputs/evaluate/tables.md").read_text().replace("\n### ", "\n#### ").replace("### ", "#### ", 1)


def sweeps(root: Path) -> str:
    parts = []
    for path in sorted((root / "outputs/evaluate/sweeps").glob("*.csv")):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        body = [[float(cell) for cell in row] for row in rows[1:]]
        parts.append(f"`{path.relative_to(root).as_posix()}`:\n\n" + table(rows[0], body))
    return "\n".join(parts)


def finetune(root: Path) -> str:
    data = load(root, "outputs/finetune/metrics.json")
    keys = [k for k, v in data.items() if not isinstance(v, dict)]
    systems = {"SEAP": data} | {name: v for name, v in data.items() if isinstance(v, dict)}
    return table(("system", *keys), ((name, *(m.get(k) for k in keys)) for name, m in systems.items()))


def read_curve(path: Path) -> list[tuple[int, float]]:
    """(step, val_loss) rows of a training stage's ``val_loss.csv``."""
    with open(path, newline="") as f:
        return [(int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(f)]


def validation_curve(root: Path, sources: Sequence[tuple[str, str]] | None = None) -> str:
    """Validation loss of each trained system at ten evenly spaced logged steps, and where it was lowest."""
    curves = {}
    sources = sources or (
        ("SEAP", "outputs/finetune/val_loss.csv"),
        ("text-only", "outputs/finetune/text_only/val_loss.csv"),
    )
    for name, path in sources:
        if (root / path).is_file():
            curves[name] = read_curve(root / path)
    first = next(iter(curves.values()))
    picks = sorted({round(i * (len(first) - 1) / 9) for i in range(10)})
    rows = [(first[i][0], *(c[i][1] for c in curves.values())) for i in picks]
    lowest = "; ".join(
        f"{n}: lowest {min(v for _, v in c):.4g} at step {min(c, key=lambda x: x[1])[0]}" for n, c in curves.items()
    )
    return table(("step", *(f"{n} val loss" for n in curves)), rows) + f"\n{lowest} (of {first[-1][0]}).\n"


def validation_curve_v2(root: Path) -> str:
    """The corpus-v2 curves that chose the step counts (3,000 fine-tune and 1,000 distillation steps, kept under
    ``results/``), then the committed run's at the chosen counts."""
    curves = (
        ("fine-tune, 3,000 steps (seed 0)", "results/finetune_val_loss_v2_3000.csv"),
        ("distill, 1,000 steps", "results/distill_val_loss_v2_1000.csv"),
        ("fine-tune, committed run (seed 0)", "outputs/finetune/val_loss.csv"),
        ("distill, committed run", "outputs/distill/val_loss.csv"),
    )
    params = load_params(root / "params.yaml")
    chosen = []
    for what, path, steps in (
        ("fine-tune", curves[0][1], params.finetune.steps),
        ("distillation", curves[1][1], params.distill.steps),
    ):
        curve = read_curve(root / path)
        step, loss = min(curve, key=lambda point: abs(point[0] - steps))
        lowest = min(v for _, v in curve)
        chosen.append(
            f"the {curve[-1][0]:,}-step {what} run was {100 * (loss / lowest - 1):.1f}% above its lowest "
            f"({loss:.4g} vs {lowest:.4g}) at step {step:,}, against the {steps:,} steps params.yaml ships"
        )
    tables = "\n".join(validation_curve(root, ((name, path),)) for name, path in curves)
    return tables + "\nOn the records: " + "; ".join(chosen) + ".\n"


def encoder(root: Path) -> str:
    data = load(root, "outputs/pretrain_encoder/metrics.json")
    rows = [
        ("label accuracy (linear probe)", data["accuracy"], data["untrained_accuracy"]),
        ("same-source EER", data["eer"], data["untrained_eer"]),
        ("probe L2 penalty", data["probe_l2"], data["untrained_probe_l2"]),
    ]
    head = table(("metric", "trained", "untrained, same shape and initial weights"), rows)
    rest = {k: v for k, v in data.items() if k.split("_")[0] not in ("accuracy", "eer", "probe", "untrained")}
    return head + "\n" + table(("record", "value"), rest.items())


def segment(root: Path) -> str:
    data = load(root, "outputs/segment/report.json")
    splits = data["splits"]
    keys = list(next(iter(splits.values())))
    corpus = table(("corpus", "value"), data["corpus"].items())
    return corpus + "\n" + table(("split", *keys), ((name, *(s[k] for k in keys)) for name, s in splits.items()))


def vae(root: Path) -> str:
    return table(("record", "value"), load(root, "outputs/pretrain_vae/metrics.json").items())


# ---- from experiments/seeds/ (reference conditioning over training seeds)


def seed_table(root: Path) -> str:
    return seeds.table(root / "experiments/seeds")


def seed_table_v2(root: Path) -> str:
    return seeds.table(root / "experiments/seeds/v2") or "(no run recorded yet)\n"


def seed_goals_v2(root: Path) -> str:
    return seeds_goals.goals(root / "experiments/seeds/v2")


OUTSIDE = "decoupled_frames_outside"  # training references from outside the denoised window, against the default


def seed_goals_v2_outside(root: Path) -> str:
    return seeds_goals.goals(root / "experiments/seeds/v2", OUTSIDE)


def outside_vs_default_v2(root: Path) -> str:
    table = seeds.paired_table(root / "experiments/seeds/v2", against=seeds_goals.DEFAULT, systems=[OUTSIDE])
    return table or "(no pair recorded yet)\n"


def swap_layout_v2(root: Path) -> str:
    return swap_layout.table(root / "experiments/seeds/v2") or "(no split recorded yet)\n"


def style_sweep(root: Path) -> str:
    record = load(root, "experiments/seeds/decoupled_frames_outside-seed1-style_sweep.json")
    rows = record["style_guidance_sweep"]
    return table(list(rows[0]), (list(row.values()) for row in rows))


# ---- from results/generation.json (benchmarks/generation.py)


def speed_setup(root: Path) -> str:
    data = load(root, "results/generation.json")
    return table(("setting", "value"), ((k, data[k]) for k in ("items", "clip_seconds", "threads", "batch")))


def speed_quality(root: Path) -> str:
    data = load(root, "results/generation.json")
    chosen = data["selection"]["chosen"]
    header = ("sampler", "steps", "seeds", "U-Net calls/clip", "s/clip", "FD", "KID", "style sim.", "label hit")

    rows = [
        (
            *(r[k] for k in ("sampler", "steps", "seeds", "unet_calls_per_clip", "seconds_per_clip")),
            *(pm(r[k], r.get(f"{k}_std")) for k in ("fd", "kid", "style", "hit")),
        )
        for r in data["quality_summary"]
    ]
    note = f"\nFewest steps within the FD/KID margin of {data['selection']['anchor']['sampler']}-"
    note += f"{data['selection']['anchor']['steps']}: {chosen['sampler']} at {chosen['steps']} steps.\n"
    return table(header, rows) + note


def speed_levers(root: Path) -> str:
    rows = load(root, "results/generation.json")["levers"]
    return table(("lever", "RTF, batch 8", "speed-up"), ((r["lever"], r["rtf_batch8"], r["speedup"]) for r in rows))


def speed_rtf(root: Path) -> str:
    data = load(root, "results/generation.json")
    fast = ", ".join(f"{k} {v}" for k, v in data["fast"].items())
    return table(("setting", "real-time factor"), data["rtf"].items()) + f"\n`fast`: {fast}.\n"


def speed_fast_quality(root: Path) -> str:
    rows = load(root, "results/generation.json")["fast_quality"]
    keys = ("fd", "kid", "style", "hit")
    return table(("seeds", *keys), [(len(rows), *(spread([r[k] for r in rows]) for k in keys))])


def speed_griffin_lim(root: Path) -> str:
    rows = load(root, "results/generation.json")["griffin_lim"]
    return table(list(rows[0]), (list(r.values()) for r in rows))


def speed_systems(root: Path) -> str:
    """results/systems.json (benchmarks/systems.py): teacher, fast candidates and distilled, one run."""
    path = root / "results/systems.json"
    if not path.is_file():
        return "No record yet: `python benchmarks/systems.py` writes `results/systems.json`.\n"
    data = json.loads(path.read_text())
    header = ("system", "steps", "precision", "FAD-inf", "KID", "style sim.", "follow [95% CI]", "label hit")
    header += ("RTF b1", "RTF b8", "speed-up b8")
    rows = []
    for name, r in data["systems"].items():
        if "missing" in r:
            rows.append((name, r["missing"], *[""] * (len(header) - 2)))
            continue
        follow = f"{pm(r['follow'], r.get('follow_std'))} [{fmt(r['follow_ci95_low'])}, {fmt(r['follow_ci95_high'])}]"
        rows.append(
            (
                name,
                r["steps"],
                r["precision"],
                pm(r["fad_inf_yamnet"], r.get("fad_inf_yamnet_std")),
                pm(r["kid_yamnet"], r.get("kid_yamnet_std")),
                pm(r["style"], r.get("style_std")),
                follow,
                pm(r["hit"], r.get("hit_std")),
                r["rtf_batch1"],
                r["rtf_batch8"],
                r["speedup_batch8"],
            )
        )
    setup = f"{data['items']} transfer items x sampling seeds {data['seeds']}, {data['clip_seconds']} s clips, "
    setup += f"{data['threads']} threads, CPU capability {data['cpu']}; mean ± std over the seeds.\n\n"
    timed = {name: r["profile_share"] for name, r in data["systems"].items() if "profile_share" in r}
    parts = list(next(iter(timed.values()))) if timed else []
    where = table(
        ("where the time goes, batch 8 (share)", *parts), ((n, *(v[p] for p in parts)) for n, v in timed.items())
    )
    return setup + table(header, rows) + "\n" + where


def speed_profile(root: Path) -> str:
    data = load(root, "results/generation.json")
    profile = table(("part", "seconds", "share"), ((k, v["seconds"], v["share"]) for k, v in data["profile"].items()))
    memory = data["peak_memory"]
    keys = list(next(iter(memory.values())))
    return profile + "\n" + table(("batch", *keys), ((k, *(v[k2] for k2 in keys)) for k, v in memory.items()))


# ---- from results/vocoder.json (benchmarks/vocoder.py)


def vocoder_benchmark(root: Path) -> str:
    data = load(root, "results/vocoder.json")
    header = ("mel -> waveform", "embedding cosine", "top-1 kept", "label hit", "of real", "FAD-inf", "KID", "RTF")
    rows = [
        (
            f"`{name}`",
            f"{fmt(r['embedding_cosine'])} ± {fmt(r['embedding_cosine_ci95'])}",
            *(r[k] for k in ("top1_kept", "label_hit", "label_hit_vs_real", "fad_inf", "kid", "rtf")),
        )
        for name, r in data["options"].items()
    ]
    first = next(iter(data["options"].values()))
    note = f"\n{first['items']} clips ({data['clips']}); real clips' own label hit {fmt(data['real_label_hit'])}; "
    note += f"RTF at batch {data['batch_size']}, {data['threads']} threads ({data['machine']}). `{data['command']}`\n"
    return table(header, rows) + note


# ---- from results/dag_time.json (tools/dag_time.py)


# The shipped params' run on the slower machine the 3,000-step run was timed on: the step cut is timed on one class.
SLOWER_RUN = "results/dag_time_v2_2400steps_slower.json"
# The latest `dvc repro`, the one dvc.lock comes from, when it reran only some stages (null: unchanged, not rerun).
LOCK_RUN = "results/dag_time_lock.json"


def dag_time(root: Path) -> str:
    data = load(root, "results/dag_time.json")
    rows = [(f"`{name}`", "–" if sec is None else f"{sec / 60:.1f}") for name, sec in data["stages"].items()]
    rows.append(("**total**", f"{data['total_seconds'] / 60:.1f}"))
    note = f"\n{data['cores']} cores ({data['machine']}), commit `{data['commit'][:10]}`."
    note += f" {data['note']}\n" if data.get("note") else "\n"
    slower = load(root, SLOWER_RUN)
    note += (
        f"\nThe same params on the machine class of the step-count runs below (commit `{slower['commit'][:10]}`, "
        f"{slower['cores']} cores): {slower['total_seconds'] / 60:.1f} min, fine-tune "
        f"{slower['stages']['finetune'] / 60:.1f} min (`{SLOWER_RUN}`).\n"
    )
    lock = load(root, LOCK_RUN)
    if lock["commit"] != data["commit"]:
        rerun = [name for name, sec in lock["stages"].items() if sec is not None]
        kept = [name for name, sec in lock["stages"].items() if sec is None]
        note += (
            f"\n`dvc.lock` and `outputs/` come from the latest `dvc repro` of the same params, on commit "
            f"`{lock['commit'][:10]}`: it reran {', '.join(f'`{n}`' for n in rerun)} ("
            f"{lock['total_seconds'] / 60:.1f} min in all), the stages whose code had changed since commit "
            f"`{data['commit'][:10]}`, and kept {', '.join(f'`{n}`' for n in kept)} (`{LOCK_RUN}`).\n"
        )
    return table(("stage", "minutes"), rows) + note


def step_cut(root: Path) -> str:
    """What cutting the training steps for the 90 minutes cost: the run before the cut (its records kept under
    ``results/``) against the committed run, same evaluation (items, sampling seeds, protocols), one training seed."""
    runs = {
        "before: fine-tune 3,000 + distill 1,000 steps": (
            "results/dag_time_v2_3000steps.json",
            "results/evaluate_v2_3000steps.json",
        ),
        "the shipped step counts (committed outputs; timed on the same machine class)": (
            SLOWER_RUN,
            "outputs/evaluate/metrics.json",
        ),
    }
    rows = []
    for name, (times, metrics) in runs.items():
        t, m = load(root, times), load(root, metrics)
        seap, dropped = m["transfer"]["seap"], m["transfer"]["seap_no_reference"]
        rows.append(
            (
                name,
                f"{t['total_seconds'] / 60:.1f}",
                f"{t['stages']['finetune'] / 60:.1f}",
                seap["hit"],
                dropped["hit"],
                seap["style"],
                seap["follow"],
                f"[{seap['follow_ci95_low']:+.4f}, {seap['follow_ci95_high']:+.4f}]",
                seap["fad_inf_yamnet"],
                seap["kid_yamnet"],
                m["swap_over_seed_ratio"],
            )
        )
    head = (
        "run",
        "DAG min",
        "fine-tune min",
        "hit",
        "hit, reference dropped",
        "style",
        "follow",
        "follow 95% over items",
        "FAD-inf",
        "KID",
        "swap/seed log-mel ratio",
    )
    m = load(root, "outputs/evaluate/metrics.json")
    return table(head, rows) + f"\nTransfer protocol, {m['items']} test items, {m['seeds']} sampling seeds each.\n"


# ---- from results/faults.json (tools/faults.py)


def fault_table(root: Path) -> str:
    return faults.table(load(root, faults.RECORDS["ci"]))


def fault_table_long(root: Path) -> str:
    return faults.table(load(root, faults.RECORDS["long"]))


def fault_table_long_kills(root: Path) -> str:
    return faults.table(load(root, faults.RECORDS["long-kills"]))


def fault_table_long_rerun(root: Path) -> str:
    return faults.table(load(root, faults.RECORDS["long-rerun"]))


# ---- from dvc.lock


def params_run(root: Path) -> str:
    """The settings of the committed run, as ``dvc.lock`` recorded them (not today's params.yaml)."""
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    finetune = stages["finetune"]["params"]["params.yaml"]["finetune"]
    evaluate = stages["evaluate"]["params"]["params.yaml"]["evaluate"]
    rows = [
        ("data.corpus", stages["download"]["params"]["params.yaml"]["data.corpus"]),
        ("finetune.steps", finetune["steps"]),
        ("finetune.style", finetune.get("style")),
        ("finetune.baseline", finetune["baseline"]),
        ("finetune.mixed_precision", finetune["mixed_precision"]),
        ("evaluate.sampling.steps", evaluate["sampling"]["steps"]),
        ("evaluate.seeds", evaluate["seeds"]),
        ("evaluate.protocols", evaluate["protocols"]),
    ]
    return table(("dvc.lock", "value"), rows)


GENERATORS: dict[str, Callable[[Path], str]] = {
    "speed-systems": speed_systems,
    "stages": stages,
    "layout": layout,
    "layout-modules": layout_modules,
    "evaluation-tables": evaluation_tables,
    "sweeps": sweeps,
    "finetune": finetune,
    "validation-curve": validation_curve,
    "validation-curve-v2": validation_curve_v2,
    "step-cut": step_cut,
    "encoder": encoder,
    "segment": segment,
    "vae": vae,
    "seeds": seed_table,
    "style-sweep": style_sweep,
    "seeds-v2": seed_table_v2,
    "seeds-v2-goals": seed_goals_v2,
    "seeds-v2-goals-outside": seed_goals_v2_outside,
    "seeds-v2-outside-vs-default": outside_vs_default_v2,
    "swap-layout-v2": swap_layout_v2,
    "speed-setup": speed_setup,
    "speed-quality": speed_quality,
    "speed-levers": speed_levers,
    "speed-rtf": speed_rtf,
    "speed-fast-quality": speed_fast_quality,
    "speed-griffin-lim": speed_griffin_lim,
    "speed-profile": speed_profile,
    "vocoder-benchmark": vocoder_benchmark,
    "dag-time": dag_time,
    "faults": fault_table,
    "faults-long": fault_table_long,
    "faults-long-kills": fault_table_long_kills,
    "faults-long-rerun": fault_table_long_rerun,
    "params-run": params_run,
}


def render(text: str, root: Path, where: str) -> str:
    """``text`` with every block's body written anew; an unknown block name stops, naming file and line."""

    def body(match: re.Match) -> str:
        name = match["name"]
        if name not in GENERATORS:
            line = text.count("\n", 0, match.start()) + 1
            raise SystemExit(f"{where}:{line}: unknown generated block {name!r} (known: {', '.join(GENERATORS)})")
        return match[1] + GENERATORS[name](root) + match[4]

    return BLOCK.sub(body, text)


def documents(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=HERE, help="the tree whose docs and records to use")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a doc would change")
    args = parser.parse_args(argv)
    stale = []
    for path in documents(args.root):
        text = path.read_text()
        new = render(text, args.root, str(path.relative_to(args.root)))
        if new != text:
            stale.append(path.relative_to(args.root).as_posix())
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("generated blocks differ from the records (run `python tools/docs.py`): " + ", ".join(stale))
        return 1
    print(("rewrote: " + ", ".join(stale)) if stale and not args.check else "docs up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
