"""Record the wall-clock time of each stage of a ``dvc repro`` from its log, as a committed record.

    dvc repro 2>&1 | tee repro.log
    python tools/dag_time.py repro.log [--out results/dag_time.json] [--commit SHA] [--note "..."]

Stages run one after another, so a stage's time is the span from the previous stage's ``<stage> done:`` log line
(for the first stage that ran, the log's first timestamp) to its own: it includes DVC's hashing and lock update
between stages, which a user waits for too. Stages that did not run (skipped by DVC as unchanged, or not reached
by a stopped run) have no line and are recorded as null. ``tools/docs.py`` writes the table in docs/results.md
from the record.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from seap_model.stages import STAGES  # noqa: E402

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
DONE = re.compile(r"seap_model\.cli: ([\w-]+) done:")


def stage_seconds(lines: list[str]) -> dict[str, float]:
    """{stage: seconds} in the order the stages finished."""
    first, previous, out = None, None, {}
    for line in lines:
        stamp = STAMP.match(line)
        if not stamp:
            continue
        at = datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f")
        first = first or at
        done = DONE.search(line)
        if done:
            out[done[1]] = round((at - (previous or first)).total_seconds(), 1)
            previous = at
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("log", type=Path, help="the output of `dvc repro`")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "dag_time.json")
    parser.add_argument("--commit", default="HEAD", help="the commit the run started from (default: HEAD)")
    parser.add_argument("--note", help="what else ran on the machine meanwhile, if anything (kept in the record)")
    args = parser.parse_args(argv)
    seconds = stage_seconds(args.log.read_text(errors="replace").splitlines())
    if not seconds:
        raise SystemExit(f"{args.log}: no '<stage> done:' lines with timestamps (is it a `dvc repro` log?)")
    git = ["git", "rev-parse", args.commit]
    commit = subprocess.run(git, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    record = {
        "stages": {s.name: seconds.get(s.name) for s in STAGES},  # None: did not run
        "total_seconds": round(sum(seconds.values()), 1),
        "cores": os.cpu_count(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "commit": commit,
    }
    if args.note:
        record["note"] = args.note
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}: {record['total_seconds'] / 60:.1f} min over {len(seconds)} stages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
