"""The noise schedule a model is trained with, and the sampler saved with it (any diffusers scheduler can be
swapped in later with ``from_config``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from seap_model.config import SCHEDULERS, FinetuneParams

# DPM-Solver++ on the cosine schedule needs lambda clipped at the noisy end, or the first steps explode.
LAMBDA_MIN_CLIPPED = -5.1


def training_scheduler(fp: FinetuneParams) -> DDPMScheduler:
    # clip_sample=False: latents are unit-variance, not images in [-1, 1].
    return DDPMScheduler(
        num_train_timesteps=fp.num_train_timesteps,
        beta_schedule=fp.beta_schedule,
        beta_start=fp.beta_start,
        beta_end=fp.beta_end,
        prediction_type=fp.prediction_type,
        clip_sample=False,
    )


def sampling_scheduler(train: DDPMScheduler) -> DPMSolverMultistepScheduler:
    return named_sampler(train, "dpmpp-2m")


# Samplers a user can pick by name (``seap generate --scheduler``, params ``sampling.scheduler``, batch jobs, the
# web page): diffusers class and the settings that make it that sampler. Each is built from the saved sampler's
# config with ``from_config``, so it keeps the trained prediction type and noise schedule.
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
    """``pipe.scheduler`` replaced by the sampler ``name`` inside the block, the saved one restored after."""
    saved = pipe.scheduler
    pipe.scheduler = named_sampler(saved, name)
    try:
        yield
    finally:
        pipe.scheduler = saved
