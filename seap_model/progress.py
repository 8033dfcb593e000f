"""How a run reports on itself: progress bars on a terminal only, and a run record kept out of the metrics.

Bars are drawn only when stderr is an interactive terminal; in CI, DVC and Prefect the stages log plain lines
instead. Wall-clock times and resume points differ from run to run even when the results are bit-identical,
so they go to ``run.json`` beside a stage's metrics (not tracked by git or DVC), never into ``metrics.json``.
Debug logging never writes a credential: the S3 client's wire loggers stay at INFO (``keep_credentials_out_of_logs``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

RUN_RECORD = "run.json"
# The S3 client stack's wire loggers: at DEBUG botocore prints every request's signing headers, the access key
# id among them (``Authorization: ... Credential=AKIA...``), and urllib3/s3transfer/s3fs print what they send.
WIRE_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "aiobotocore", "s3fs")


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


def keep_credentials_out_of_logs() -> None:
    """Hold the ``WIRE_LOGGERS`` at INFO or above (the root's level when that is higher), so debug logging
    (``seap -v``, a DEBUG Prefect root logger) never writes a credential; call after logging is configured."""
    level = max(logging.INFO, logging.getLogger().getEffectiveLevel())
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(level)
