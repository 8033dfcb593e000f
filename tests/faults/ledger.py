"""The fault suite's figures: what each family of trials tried and what came of it.

Faults are injected from a seed (``SEAP_FAULTS_SEED``, default 0) so that a failing trial reproduces: each family
draws from ``rng(family)``, a generator of its own. ``SEAP_FAULTS=long`` selects the long form (``size(ci,
long)`` gives the family's count in each form); CI runs the bounded form. When ``SEAP_FAULTS_OUT`` names a
folder, ``record`` appends one JSON line per family to ``records.jsonl`` there, which ``tools/faults.py`` turns
into ``results/faults.json`` and the table in docs/faults.md. A test asserts its figures before it records them,
so a recorded row is one the suite checked.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

LONG = os.environ.get("SEAP_FAULTS", "") == "long"
SEED = int(os.environ.get("SEAP_FAULTS_SEED", "0"))

# The columns of the table, in order; a family fills those that apply to it (the others stay empty).
FIGURES = (
    "trials",  # fault injections (kills, outages) or inputs tried (fuzzed rows/files, hostile inputs, load items)
    "survived",  # trials after which a rerun completed and everything verified
    "rejected",  # bad inputs rejected with a reason naming the file/line/field
    "refused",  # hostile inputs refused
    "kept",  # good items kept among the bad ones
    "lost",  # items lost (must be 0)
    "duplicated",  # items duplicated (must be 0)
)


def size(ci: int, long: int) -> int:
    """A family's count in the form this run is: ``long`` under ``SEAP_FAULTS=long``, else ``ci``."""
    return long if LONG else ci


def rng(family: str) -> random.Random:
    """The seeded random generator of one family of trials (independent of the order tests run in)."""
    return random.Random(f"{SEED}:{family}")


def record(category: str, target: str, **figures: object) -> dict:
    """Record one family's figures (``FIGURES`` plus any of its own, e.g. peak RSS) for the suite's table."""
    row = {"category": category, "target": target, "form": "long" if LONG else "ci", "seed": SEED, **figures}
    out = os.environ.get("SEAP_FAULTS_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        with open(Path(out) / "records.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    return row
