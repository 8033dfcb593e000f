"""The segment stage's report files: ``report.json`` (DVC metrics) and ``rejects.csv`` (item, rule, reason)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from seap_model.data.corpus import Reject

REPORT, REJECTS = "report.json", "rejects.csv"


def write_report(report_dir: str | Path, report: dict, rejects: Iterable[Reject]) -> None:
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    with (report_dir / REJECTS).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["item", "rule", "reason"])
        writer.writerows([r.item, r.rule, r.reason] for r in rejects)
    (report_dir / REPORT).write_text(json.dumps(report, indent=2) + "\n")
