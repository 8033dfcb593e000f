"""The download stage: stage ``data.source`` into ``data.raw_dir``.

``raw_dir`` persists between runs (DVC ``persist: true``) so that a killed download of a large collection
resumes. It is only resumed for the same source: the source's params are recorded in ``raw_dir`` and a
different source starts the folder over (one log line says so), so no file of another source can stay behind.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from seap_model.config import Params, ShippedSource
from seap_model.data.fetch import download_collection, stage_shipped

log = logging.getLogger(__name__)
SOURCE_RECORD = ".seap-source.json"


def _source_identity(params: Params) -> dict:
    source = params.data.source.model_dump(mode="json")
    if isinstance(params.data.source, ShippedSource):
        source["corpus"] = params.data.corpus
    return source


def download(params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Stage the configured source into ``data.raw_dir``; returns a report of what was fetched."""
    raw = Path(params.data.raw_dir)
    identity = _source_identity(params)
    record = raw / SOURCE_RECORD
    if raw.exists():
        previous = json.loads(record.read_text()) if record.is_file() else None
        if previous != identity:
            log.info("%s holds files of another data source (%s): starting it over", raw, previous or "unrecorded")
            shutil.rmtree(raw)
    raw.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(identity, sort_keys=True) + "\n")
    if isinstance(params.data.source, ShippedSource):
        return stage_shipped(params)
    return download_collection(params.data.source, raw)
