"""Stages called the way ``seap <stage>`` and the Prefect tasks call them: with the fingerprint the runner
computes (``seap_model.fingerprint.stage_fingerprint``), through the registry."""

from __future__ import annotations

from seap_model import stages
from seap_model.config import Params
from seap_model.fingerprint import stage_fingerprint


def run_stage(name: str, params: Params) -> dict:
    """Run stage ``name`` (``pretrain-encoder``, not ``pretrain_encoder``) on ``params``; returns its report."""
    return stages.run(name, params, stage_fingerprint(name, params))
