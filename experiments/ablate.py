"""The ablation table in one command: every entry of ``configs/ablations.yaml`` as a DVC experiment, then one
table of their headline evaluation numbers.

    python experiments/ablate.py              # queue the ablations not run yet, run the queue, write the table
    python experiments/ablate.py --table      # only tabulate the experiments that have run
    python experiments/ablate.py --only concat reference-4s

Experiments are DVC's (``dvc exp run --queue -n NAME -S key=value``; ``dvc exp show`` lists them), so each one
reruns exactly the stages its overrides make stale and nothing else. The table goes to ``results/ablations.md``
and ``results/ablations.csv``; rows ``train-seed-*`` are also pooled with the workspace into a mean +- std row
(training seeds, next to the sampling-seed std every evaluation reports). Lives outside ``seap_model`` because
it drives DVC, which the library never imports.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ABLATIONS = ROOT / "configs" / "ablations.yaml"
DVC = str(Path(sys.executable).with_name("dvc"))  # the dvc beside this interpreter: works without an activated venv
COLUMNS = {  # table column -> metric key in outputs/evaluate/metrics.json
    "transfer hit": "transfer.seap.hit",
    "transfer style": "transfer.seap.style",
    "follow": "transfer.seap.follow",
    "follow 95% low": "transfer.seap.follow_ci95_low",
    "follow 95% high": "transfer.seap.follow_ci95_high",
    "KID": "transfer.seap.kid_yamnet",
    "FAD-inf": "transfer.seap.fad_inf_yamnet",
    "text-only hit": "transfer.text_only.hit",
    "text-only style": "transfer.text_only.style",
    "swap/seed ratio": "swap_over_seed_ratio",
}


def load_ablations(path: Path = ABLATIONS) -> dict[str, dict]:
    data = yaml.safe_load(path.read_text()) or {}
    for name, overrides in data.items():
        if not isinstance(overrides, dict) or not overrides:
            raise SystemExit(f"{path}: ablation {name!r} needs a mapping of params overrides")
    return data


def override_args(overrides: dict) -> list[str]:
    """``-S key=value`` pairs, values in YAML so booleans and lists survive."""
    args = []
    for key, value in overrides.items():
        args += ["-S", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
    return args


def experiments() -> list[dict]:
    """``dvc exp show`` rows of the experiments on HEAD (and the workspace), flattened by dvc.api."""
    import dvc.api

    return dvc.api.exp_show(repo=str(ROOT))


def metric(row: dict, key: str):
    """A metric of an ``exp_show`` row (DVC prefixes the file name only when two files share a key)."""
    for name, value in row.items():
        if name == key or name.endswith(":" + key):
            return value
    return None


def queue(names: list[str], ablations: dict[str, dict]) -> None:
    done = {row.get("Experiment") for row in experiments()}
    for name in names:
        if name in done:
            print(f"{name}: already run (dvc exp remove {name} to run it again)")
            continue
        subprocess.run(
            [DVC, "exp", "run", "--queue", "-n", name, *override_args(ablations[name])], check=True, cwd=ROOT
        )


def table(names: list[str]) -> list[list]:
    rows = {row.get("Experiment") or row.get("rev"): row for row in experiments()}
    out = [["experiment", *COLUMNS]]
    seeds = []
    for name in ["workspace", *names]:
        row = rows.get(name)
        if row is None:
            out.append([name, *(["not run"] * len(COLUMNS))])
            continue
        values = [metric(row, key) for key in COLUMNS.values()]
        out.append([name, *values])
        if name == "workspace" or name.startswith("train-seed-"):
            seeds.append(values)
    if len(seeds) > 1:
        pooled = []
        for column in zip(*seeds):
            numbers = [v for v in column if isinstance(v, int | float)]
            pooled.append(
                f"{statistics.mean(numbers):.4g} ± {statistics.stdev(numbers):.2g}" if len(numbers) > 1 else "–"
            )
        out.append([f"training seeds ({len(seeds)})", *pooled])
    return out


def write_table(rows: list[list], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "ablations.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)

    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else "–" if v is None else str(v)

    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows[1:]]
    (out / "ablations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", action="store_true", help="only tabulate experiments that have run")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these ablations only")
    args = parser.parse_args(argv)
    ablations = load_ablations()
    names = args.only or list(ablations)
    unknown = sorted(set(names) - set(ablations))
    if unknown:
        raise SystemExit(f"unknown ablations {unknown} (in {ABLATIONS}: {', '.join(ablations)})")
    if not args.table:
        queue(names, ablations)
        subprocess.run([DVC, "exp", "run", "--run-all"], check=True, cwd=ROOT)
    write_table(table(names), ROOT / "results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
