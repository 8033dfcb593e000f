"""Samplers by name: the diffusers schedulers a user can pick (``sampling.scheduler``, ``seap generate
--scheduler``, batch rows, the web page), each built from the saved sampler's config with ``from_config``, so it
keeps the trained prediction type and noise schedule."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from seap_model.config import SCHEDULERS

# DPM-Solver++ on the cosine schedule needs lambda clipped at the noisy end, or the first steps explode.
LAMBDA_MIN_CLIPPED = -5.1

SAMPLERS: dict[str, tuple[str, dict]] = {
    "dpmpp-2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "lambda_min_clipped": LAMBDA_MIN_CLIPPED},
    ),
    "dpmpp-3m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 3, "lambda_min_clipped": LAMBDA_MIN_CLIPPED},
    ),
    "unipc": ("UniPCMultistepScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
}
if tuple(SAMPLERS) != SCHEDULERS:  # the params' list and this table must name the same samplers
    raise ImportError(f"SAMPLERS {tuple(SAMPLERS)} != config.SCHEDULERS {SCHEDULERS}")


def named_sampler(current, name: str | None):
    """The sampler ``name`` (a key of ``SAMPLERS``) from ``current``'s config; ``current`` itself for None."""
    if name is None:
        return current
    if type(current).__name__ == "LCMScheduler":
        raise ValueError(
            f"scheduler {name!r}: a distilled pipeline samples with the consistency sampler it was distilled for "
            "(leave scheduler unset)"
        )
    if name not in SAMPLERS:
        raise ValueError(f"unknown scheduler {name!r}: expected one of {', '.join(SAMPLERS)}")
    import diffusers

    cls, settings = SAMPLERS[name]
    return getattr(diffusers, cls).from_config(current.config, **settings)


def sampler_name(scheduler) -> str | None:
    """The ``SAMPLERS`` name ``scheduler`` is (class and settings), None if it is none of them."""
    for name, (cls, settings) in SAMPLERS.items():
        if type(scheduler).__name__ == cls and all(scheduler.config.get(k) == v for k, v in settings.items()):
            return name
    return None


@contextmanager
def sampler_swapped(pipe, name: str | None) -> Iterator[None]:
    """``pipe.scheduler`` replaced by the sampler ``name`` inside the block, the saved one restored after
    (None: the pipeline's own, untouched)."""
    if name is None:
        yield
        return
    saved = pipe.scheduler
    pipe.scheduler = named_sampler(saved, name)
    try:
        yield
    finally:
        pipe.scheduler = saved
