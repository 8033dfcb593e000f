"""The segment stage: build SERST (scenes with strong labels, 2 s references, splits) from ``data.raw_dir``.

The shipped corpus's single-event clips are composed into scenes (``data.compose``); a collection that already
carries strong labels is segmented clip by clip (``data.strong_segment``).
"""

from __future__ import annotations

from collections.abc import Mapping

from seap_model.config import Params, ShippedSource
from seap_model.data.compose import compose_serst
from seap_model.data.strong_segment import segment_collection


def segment(params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Build SERST into ``data.serst_dir`` and write the report to ``data.report_dir``; returns the report."""
    if isinstance(params.data.source, ShippedSource):
        return compose_serst(params)
    return segment_collection(params)
