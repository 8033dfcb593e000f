"""tools/dag_time.py: per-stage wall time from a `dvc repro` log, skipped stages left empty."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import dag_time

LOG = """Running stage 'download':
> seap download
2026-12-06 01:51:40,000 INFO seap_model.data.fetch: staged 0 of 1588 corpus files
2026-12-06 01:51:43,500 INFO seap_model.cli: download done: {"files": 1588}
Updating lock file 'dvc.lock'
Stage 'segment' didn't change, skipping
Running stage 'finetune':
> seap finetune
2026-12-06 01:52:00,000 INFO seap_model.training.loop: step 50/3000
2026-12-06 02:10:03,500 INFO seap_model.cli: finetune done: {"steps": 3000}
"""


def test_each_stage_runs_from_the_previous_stage_end_and_skipped_stages_are_empty(tmp_path):
    log = tmp_path / "repro.log"
    log.write_text(LOG)
    assert dag_time.stage_seconds(LOG.splitlines()) == {"download": 3.5, "finetune": 1100.0}
    out = tmp_path / "dag_time.json"
    assert dag_time.main([str(log), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["stages"]["finetune"] == 1100.0 and record["stages"]["segment"] is None
    assert record["total_seconds"] == 1103.5
    assert list(record["stages"])[:2] == ["download", "segment"]  # the DAG's order


def test_a_log_without_stage_lines_is_refused(tmp_path):
    log = tmp_path / "repro.log"
    log.write_text("Stage 'segment' didn't change, skipping\n")
    with pytest.raises(SystemExit, match="no '<stage> done:' lines"):
        dag_time.main([str(log), "--out", str(tmp_path / "x.json")])
