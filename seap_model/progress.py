"""How a run reports on itself: progress bars on a terminal only, and a run record kept out of the metrics.

Bars are drawn only when stderr is an interactive terminal; in CI, DVC and Prefect the stages log plain lines
instead. Wall-clock times and resume points differ from run to run even when the results are bit-identical,
so they go to ``run.json`` beside a stage's metrics (not tracked by git or DVC), never into ``metrics.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

RUN_RECORD = "run.json"


def progress(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar that draws only on an interactive terminal (tqdm's ``disable=None``) and when ``enabled``."""
    return tqdm(iterable, disable=None if enabled else True, **kwargs)


def write_run_record(report_dir: str | Path, record: dict) -> Path:
    """Write ``run.json`` (wall-clock seconds, resume points: what differs between identical runs)."""
    path = Path(report_dir) / RUN_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def quiet_library_bars() -> None:
    """Turn off the loading bars diffusers, transformers and huggingface_hub draw themselves (they ignore tqdm's
    terminal check and fill logs with carriage returns), unless stderr is an interactive terminal."""
    if sys.stderr.isatty():
        return
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    disable_progress_bars()
