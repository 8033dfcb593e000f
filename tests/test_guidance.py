"""Double guidance against its formula: e(null) + g_t (e(text) - e(null)) + g_s (e(text, ref) - e(text)).

The expected noise is computed here from three separate U-Net calls on conditions built from the pipeline's
components (text encoder, reference encoder, adapter), not through ``SEAPPipeline.guided_noise``; the pipeline
is run through ``__call__``, so the routing of g_s = 0 and g_t = g_s to shorter branch lists is covered too.
"""

from __future__ import annotations

import pytest
import torch

from seap_model.models.text_encoder import encode_text
from tests.conftest import tone

PROMPTS = ["a dog barking", "a bell ringing"]
REFERENCES = [tone(1.0), tone(1.0, freq=2500.0)]
SEEDS = (0, 1)
DURATION = 0.64
# Batched (one U-Net call for all branches) and separate calls differ by float summation order only: 1e-5 of the
# largest value (tests/test_samplers.py); a wrong scale or branch moves the result by the scale times a branch
# difference, which is O(1) here (checked below: the tolerance can fail).
RTOL = 1e-5


class Branches:
    """e(null), e(text), e(text, ref): the tiny pipeline's U-Net on conditions built from its components."""

    def __init__(self, pipe):
        self.pipe = pipe
        length = pipe.config.max_text_length
        self.text = encode_text(pipe.tokenizer, pipe.text_encoder, PROMPTS, length)
        self.null = encode_text(pipe.tokenizer, pipe.text_encoder, [""] * len(PROMPTS), length)
        with torch.no_grad():
            self.style = pipe.adapter(*self.text, pipe.encode_reference(REFERENCES, pipe.sample_rate))
        self.zero = torch.zeros_like(self.style)  # a dropped reference is the zero style vector

    @torch.no_grad()
    def noise(self, scheduler, latents, t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model_in = scheduler.scale_model_input(latents, t)

        def e(tokens_mask, style):
            tokens, mask = tokens_mask
            return self.pipe.unet(
                model_in, t, encoder_hidden_states=tokens, encoder_attention_mask=mask, class_labels=style
            ).sample

        return e(self.null, self.zero), e(self.text, self.zero), e(self.text, self.style)


def formula(e_null, e_text, e_ref, g_text: float, g_style: float) -> torch.Tensor:
    return e_null + g_text * (e_text - e_null) + g_style * (e_ref - e_text)


def _run(pipe, steps: int, **scales) -> tuple[list[tuple], torch.Tensor]:
    """``pipe(...)``: the (model output, t, sample) of every scheduler step and the log-mel the vocoder got."""
    steps_seen, vocoded = [], []
    step, forward = pipe.scheduler.step, pipe.vocoder.forward

    def record_step(model_output, t, sample, **kwargs):
        steps_seen.append((model_output.clone(), t, sample.clone()))
        return step(model_output, t, sample, **kwargs)

    def record_vocoder(logmel):
        vocoded.append(logmel.clone())
        return forward(logmel)

    pipe.scheduler.step, pipe.vocoder.forward = record_step, record_vocoder
    try:
        pipe(
            PROMPTS,
            REFERENCES,
            duration=DURATION,
            num_inference_steps=steps,
            generator=[torch.Generator().manual_seed(s) for s in SEEDS],
            progress=False,
            **scales,
        )
    finally:
        del pipe.scheduler.step, pipe.vocoder.forward  # the instance attributes: back to the methods
    return steps_seen, vocoded[0]


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool((actual - expected).abs().max() <= RTOL * expected.abs().max())


# (g_t, g_s): unequal pairs take the three-branch path; g_s = 0 and g_t = g_s are routed to two branches.
PAIRS = [(4.0, 8.0), (1.0, 3.0), (6.0, 2.0), (0.5, 7.0), (3.0, 0.0), (5.0, 5.0)]


@pytest.mark.parametrize(("g_text", "g_style"), PAIRS)
def test_one_step_of_guidance_is_the_formula_over_three_unet_calls(tiny_pipeline, g_text, g_style):
    branches = Branches(tiny_pipeline)
    seen, _ = _run(tiny_pipeline, 4, text_guidance_scale=g_text, style_guidance_scale=g_style)
    pred, t, latents = seen[0]
    e_null, e_text, e_ref = branches.noise(tiny_pipeline.scheduler, latents, t)
    expected = formula(e_null, e_text, e_ref, g_text, g_style)
    assert _close(pred, expected), (pred - expected).abs().max()
    # the check can fail: the scales swapped, or the style difference taken from e(null), are far off
    assert g_text == g_style or not _close(pred, formula(e_null, e_text, e_ref, g_style, g_text))
    assert g_style == 0 or not _close(pred, e_null + g_text * (e_text - e_null) + g_style * (e_ref - e_null))


@pytest.mark.parametrize(("g_text", "g_style"), PAIRS)
def test_a_whole_sample_is_the_formula_in_a_hand_written_loop(tiny_pipeline, g_text, g_style):
    """The same scheduler, latents from the same per-item seeds, the formula at every step, the codec decode:
    the log-mel the vocoder receives from ``pipe(...)``."""
    steps = 4
    branches = Branches(tiny_pipeline)
    _, vocoded = _run(tiny_pipeline, steps, text_guidance_scale=g_text, style_guidance_scale=g_style)

    scheduler = type(tiny_pipeline.scheduler).from_config(tiny_pipeline.scheduler.config)
    scheduler.set_timesteps(steps)
    shape = tiny_pipeline.codec.latent_shape(tiny_pipeline.latent_frames(DURATION))
    latents = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in SEEDS])
    latents = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        latents = scheduler.step(formula(*branches.noise(scheduler, latents, t), g_text, g_style), t, latents)
        latents = latents.prev_sample
    with torch.no_grad():
        expected = tiny_pipeline.codec.decode(latents)
    assert vocoded.shape == expected.shape
    assert _close(vocoded, expected), (vocoded - expected).abs().max()
