"""Run the fault suite (tests/faults) and write its figures as a committed record and a table.

    python tools/faults.py                 # the long form (SEAP_FAULTS=long): results/faults_long.json + table
    python tools/faults.py --ci            # the bounded form CI runs: results/faults.json
    python tools/faults.py --seed 3 -- -k kills    # another seed; arguments after -- go to pytest
    python tools/faults.py --table         # print the table of the committed record
    python tools/faults.py --out results/faults_long_kills.json -- -k "kills or object_store"   # the slow families
    python tools/faults.py --out results/faults_long_rerun.json -- -k "pretrain-vocoder or dvc_push or lock_file"

The suite's tests record one row per family of trials (``tests/faults/ledger.py``) after asserting it; this
collects the rows of one pytest run with its outcome (exit status, passed/failed counts, wall time, commit) into
``results/faults.json`` (bounded form) or ``results/faults_long.json`` (long form). A row is written only by a
test that passed its assertions, so a failed family shows as a missing row and a non-zero ``pytest.exit``, never
as a row of good figures. ``tools/docs.py`` writes the tables into docs/faults.md from the records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.faults.ledger import FIGURES  # noqa: E402

RECORDS = {
    "ci": "results/faults.json",
    "long": "results/faults_long.json",
    "long-kills": "results/faults_long_kills.json",  # the long form's kills and outages, a run of their own
    # The long-kills families that failed there, rerun on the code that handles them (and their regression trial)
    "long-rerun": "results/faults_long_rerun.json",
}
COUNTS = re.compile(r"(\d+) (passed|failed|error|errors|skipped)")


def run_suite(long: bool, seed: int, pytest_args: Sequence[str]) -> dict:
    """One pytest run of tests/faults in the chosen form; its rows and outcome."""
    with tempfile.TemporaryDirectory(prefix="seap-faults-") as out:
        env = {**os.environ, "SEAP_FAULTS_OUT": out, "SEAP_FAULTS_SEED": str(seed), "SEAP_FAULTS": "long" * long}
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/faults", *pytest_args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        records = Path(out) / "records.jsonl"
        rows = [json.loads(line) for line in records.read_text().splitlines()] if records.exists() else []
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {kind.rstrip("s"): int(n) for n, kind in COUNTS.findall(summary)}
    if done.returncode:
        sys.stderr.write(done.stdout[-6000:] + done.stderr[-2000:])
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {
        "form": "long" if long else "ci",
        "seed": seed,
        "command": " ".join(
            ["python tools/faults.py", *(["--ci"] if not long else []), *([f"--seed {seed}"] if seed else [])]
            + (["--", shlex.join(pytest_args)] if pytest_args else [])
        ),
        "commit": commit,
        "machine": f"{os.cpu_count()} cores ({platform.machine()})",
        "pytest": {"exit": done.returncode, **counts, "summary": summary, "seconds": round(seconds, 1)},
        "rows": sorted(rows, key=lambda r: (r["category"], r["target"])),
    }


def table(record: dict) -> str:
    """The record as a markdown table: the ledger's figures as columns, a family's own figures in the last."""
    header = ["category", "target", *FIGURES, "other figures"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in record["rows"]:
        own = {k: v for k, v in row.items() if k not in (*FIGURES, "category", "target", "form", "seed")}
        other = ", ".join(f"{k} {v}" for k, v in sorted(own.items())) or "–"
        cells = [row["category"], row["target"], *("–" if row.get(f) is None else str(row[f]) for f in FIGURES)]
        lines.append("| " + " | ".join([*cells, other]) + " |")
    test = record["pytest"]
    note = (
        f"\n{record['form']} form, seed {record['seed']}, commit `{record['commit'][:10]}`, {record['machine']}: "
        f"pytest {test['summary'] or 'gave no summary'} (exit {test['exit']}). `{record['command']}`\n"
    )
    return "\n".join(lines) + "\n" + note


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ci", action="store_true", help="the bounded form CI runs, not the long form")
    parser.add_argument("--seed", type=int, default=0, help="the seed every injected fault is drawn from")
    parser.add_argument("--out", type=Path, help="where the record goes (default: RECORDS of the form)")
    parser.add_argument("--table", action="store_true", help="print the committed record's table; run nothing")
    parser.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments (e.g. -k kills)")
    args = parser.parse_args(argv)
    args.out = args.out or ROOT / RECORDS["ci" if args.ci else "long"]
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return 0
    record = run_suite(not args.ci, args.seed, args.pytest_args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(table(record))
    return record["pytest"]["exit"]


if __name__ == "__main__":
    sys.exit(main())
