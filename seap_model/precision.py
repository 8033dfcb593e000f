"""Arithmetic precision by device: whether bf16 is native here, and what ``auto`` means for sampling and training.

bf16 pays only where the hardware computes it (CUDA with bf16 support, or a CPU with AVX512-BF16/AMX through
oneDNN); elsewhere autocast's bf16 matrix products fall back to a scalar loop and run several times slower than
fp32. So ``auto`` is bf16 where it is native and fp32 otherwise, and the choice is logged once per process.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # a resolved precision -> autocast dtype
_said: set[tuple[str, str]] = set()  # (what, device type) already logged


def native_bf16(device: torch.device | str | None = None) -> bool:
    """Whether ``device`` (default: CUDA when present, else the CPU) computes bf16 natively. (accelerate's
    ``is_bf16_available`` says True for every CPU: it cannot tell.)"""
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False  # mps and others: not measured, fp32 is the safe choice


def _say_once(level: int, what: str, kind: str, message: str, *args) -> None:
    if (what, kind) not in _said:
        _said.add((what, kind))
        log.log(level, message, *args)


def sampling_precision(precision: str, device: torch.device | str) -> str:
    """The U-Net's precision for sampling on ``device``: ``fp32``/``bf16``/``fp16`` as given, ``auto`` resolved
    (bf16 where native, fp32 elsewhere). An explicit bf16 where it is emulated is obeyed, with a warning."""
    kind = torch.device(device).type
    if precision == "auto":
        chosen = "bf16" if native_bf16(kind) else "fp32"
        _say_once(
            logging.INFO,
            "sampling",
            kind,
            "sampling precision auto: %s on this %s (CPU capability %s)",
            chosen,
            kind,
            torch.backends.cpu.get_cpu_capability(),
        )
        return chosen
    if precision not in AUTOCAST:
        raise ValueError(f"precision must be auto or one of {', '.join(AUTOCAST)}, got {precision!r}")
    if precision == "bf16" and not native_bf16(kind):
        _say_once(
            logging.WARNING,
            "emulated",
            kind,
            "precision bf16 on a %s without native bf16: emulated, slower than fp32",
            kind,
        )
    return precision
