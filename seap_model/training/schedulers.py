"""The noise schedule a model is trained with, and the sampler saved with it (any diffusers scheduler can be
swapped in later with ``from_config``)."""

from __future__ import annotations

from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from seap_model.config import FinetuneParams

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
    return DPMSolverMultistepScheduler.from_config(
        train.config, algorithm_type="dpmsolver++", solver_order=2, lambda_min_clipped=LAMBDA_MIN_CLIPPED
    )


# Samplers a user can pick by name (batch jobs, the web page); each is built from the saved sampler's config,
# so it keeps the trained prediction type and noise schedule.
SAMPLERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "dpm_solver": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def named_sampler(current, name: str | None):
    """The diffusers scheduler ``name`` (a key of ``SAMPLERS``) from ``current``'s config; ``current`` for None."""
    if name is None:
        return current
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}: expected one of {sorted(SAMPLERS)}")
    import diffusers

    return getattr(diffusers, SAMPLERS[name]).from_config(current.config)
