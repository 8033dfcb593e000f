"""Optimisers: AdamW (the CPU default) or the paper's Adafactor."""

from __future__ import annotations

import torch

from seap_model.config import FinetuneParams


def make_optimizer(parameters: list, fp: FinetuneParams) -> torch.optim.Optimizer:
    """Adafactor or AdamW over ``parameters`` (tensors, or param groups that may set their own ``lr``)."""
    if fp.optimizer == "adafactor":  # the paper's; fixed learning rate, the schedule comes from the LR scheduler
        from transformers.optimization import Adafactor

        return Adafactor(
            parameters,
            lr=fp.lr,
            weight_decay=fp.weight_decay,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
        )
    return torch.optim.AdamW(parameters, lr=fp.lr, weight_decay=fp.weight_decay)
