"""Samplers by name (``sampling.scheduler``, ``seap generate --scheduler``), precision and batched guidance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from seap_model.config import SCHEDULERS, SamplingParams
from seap_model.generation import generate_one
from seap_model.samplers import named_sampler, sampler_name, sampler_swapped
from tests.conftest import tone

DURATION = 0.64  # seconds; the tiny codec's frame multiple fits it exactly


def _call(pipe, **kw):
    kw.setdefault("num_inference_steps", 4)
    return pipe(
        ["a dog barks", "a bell rings"],
        [tone(1.0), tone(1.0, freq=880.0)],
        duration=DURATION,
        generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
        progress=False,
        **kw,
    ).audios


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_sampler_gives_finite_audio_of_the_duration(tiny_pipeline, name):
    saved = tiny_pipeline.scheduler
    with sampler_swapped(tiny_pipeline, name):
        assert sampler_name(tiny_pipeline.scheduler) == name
        # The trained schedule and prediction type carry over to every sampler.
        for key in ("prediction_type", "beta_schedule", "num_train_timesteps"):
            assert tiny_pipeline.scheduler.config[key] == saved.config[key]
        audio = _call(tiny_pipeline)
    assert tiny_pipeline.scheduler is saved  # swapped back
    # The duration, to the mel frame the codec rounds it to (one hop of the vocoder's overlap-add).
    hop = tiny_pipeline.mel_settings.hop_length
    assert audio.shape[0] == 2 and abs(audio.shape[1] - DURATION * tiny_pipeline.sample_rate) <= hop
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_samplers_differ_and_the_saved_one_is_dpmpp_2m(tiny_pipeline):
    assert sampler_name(tiny_pipeline.scheduler) == "dpmpp-2m"
    third = named_sampler(tiny_pipeline.scheduler, "dpmpp-3m")
    assert isinstance(third, DPMSolverMultistepScheduler) and third.config.solver_order == 3
    assert sampler_name(named_sampler(third, "unipc")) == "unipc"
    with sampler_swapped(tiny_pipeline, "ddim"):
        ddim = _call(tiny_pipeline)
    assert not np.allclose(ddim, _call(tiny_pipeline), atol=1e-4)  # a sampler change reaches the audio
    with pytest.raises(ValueError, match="unknown scheduler 'plms'"):
        named_sampler(tiny_pipeline.scheduler, "plms")
    with pytest.raises(ValueError, match="scheduler"):
        SamplingParams(scheduler="plms")


def test_generate_one_uses_the_sampler_it_is_given(tiny_pipeline, tmp_path):
    import soundfile as sf

    ref = tmp_path / "ref.wav"
    sf.write(ref, tone(1.0).numpy(), 16000)
    runs = {}
    for name in (None, "dpmpp-2m", "euler"):
        sampling = SamplingParams(scheduler=name, steps=3, duration=DURATION)
        out = generate_one(tiny_pipeline, "a dog", ref, tmp_path / f"{name}.wav", sampling)
        runs[name] = sf.read(out, dtype="float32")[0]
    np.testing.assert_array_equal(runs[None], runs["dpmpp-2m"])  # None: the saved sampler, which is DPM++ 2M
    assert not np.allclose(runs[None], runs["euler"], atol=1e-4)


def test_batched_guidance_equals_one_call_per_branch(tiny_pipeline, monkeypatch):
    """Compared on the log-mel the vocoder receives: batched or not, the U-Net outputs differ only by float
    summation order (1e-5, tests/test_reference_conditioning.py). The waveform is not the place to compare:
    Griffin-Lim's iterations amplify a 1e-6 difference in its input unpredictably (measured: 1e-4 to 3e-3 of the
    peak, depending on the machine), so a waveform tolerance would test the vocoder's chaos, not the guidance."""
    vocoded = []
    forward = tiny_pipeline.vocoder.forward

    def keep(logmel):
        vocoded.append(logmel.detach().clone())
        return forward(logmel)

    monkeypatch.setattr(tiny_pipeline.vocoder, "forward", keep)
    results = []
    for kw in ({}, {"text_guidance_scale": 3.0, "style_guidance_scale": 5.0}):
        vocoded.clear()
        _call(tiny_pipeline, **kw)
        _call(tiny_pipeline, batch_guidance=False, **kw)
        batched, separate = vocoded
        torch.testing.assert_close(batched, separate, rtol=0, atol=1e-5 * separate.abs().max().item())
        results.append(batched)
    assert (results[0] - results[1]).abs().max() > 1e-3  # the scales reach the log-mel compared


# Half precision: the unit roundoff u = 2^-p of the format (p significant bits: bf16 8, fp16 11; fp32 24).
UNIT_ROUNDOFF = {"bf16": 2.0**-8, "fp16": 2.0**-11}


@pytest.mark.parametrize("guidance", [{}, {"text_guidance_scale": 3.0, "style_guidance_scale": 5.0}])
def test_half_precision_is_the_fp32_log_mel_within_a_few_unit_roundoffs(tiny_pipeline, guidance):
    """Autocast on the U-Net only; compared on the log-mel the vocoder receives (Griffin-Lim would amplify any
    difference unpredictably, see above).

    Every half-precision op rounds to within u = 2^-p of its exact value, so the relative L2 error of the log-mel
    is C * u, with C set by the network and the sampler (how many roundings reach the output, and the guidance
    scales that multiply the branch differences), not by the format. Measured on this pipeline (4 DPM++ steps,
    AVX-512 CPU): bf16 0.0161 and 0.0195 (C = 4.1 and 5.0, guidance 4 and 3/5), fp16 0.0020 and 0.0023 (C = 4.2
    and 4.7): the same C for both formats, as the arithmetic predicts. The bound is C <= 8 (a margin of 1.6):
    fp16 computed as bf16 (0.016 against the 0.0039 bound) fails it, and so does fp16 with the latents rounded
    to bf16 between steps (0.0041 and 0.0043). Half precision must also stay inside the U-Net: the sampler, the
    codec decode and the vocoder get fp32 with autocast off (checked directly; rounding the log-mel once to bf16
    adds 2^-9, too little for a tolerance to see)."""
    seen: set[tuple[str, torch.dtype, bool]] = set()  # (what, its dtype, autocast on) outside the U-Net
    logmel: dict[str, torch.Tensor] = {}
    pipe = tiny_pipeline
    step, decode, vocode = pipe.scheduler.step, pipe.codec.decode, pipe.vocoder.forward

    def record(name: str, x: torch.Tensor) -> torch.Tensor:
        seen.add((name, x.dtype, torch.is_autocast_enabled("cpu")))
        return x

    pipe.scheduler.step = lambda pred, t, x, **kw: step(record("prediction", pred), t, record("latents", x), **kw)
    pipe.codec.decode = lambda latents: decode(record("decode", latents))
    pipe.vocoder.forward = lambda mel: vocode(record("vocoder", logmel.setdefault(precision, mel.clone())))
    try:
        for precision in ("fp32", "bf16", "fp16"):
            seen.clear()
            _call(pipe, precision=precision, **guidance)
            outside = {(name, torch.float32, False) for name in ("prediction", "latents", "decode", "vocoder")}
            assert seen == outside, (precision, seen)
    finally:
        del pipe.scheduler.step, pipe.codec.decode, pipe.vocoder.forward
    for precision, u in UNIT_ROUNDOFF.items():
        rel = float((logmel[precision] - logmel["fp32"]).norm() / logmel["fp32"].norm())
        assert 0 < rel < 8 * u, (precision, rel, rel / u)
    with pytest.raises(ValueError, match="precision must be auto or one of fp32, bf16, fp16"):
        _call(pipe, precision="int8")


def test_a_batch_over_memory_is_split_until_it_fits(tiny_pipeline):
    """A batch bigger than the device's memory (here: more than 2 clips) runs as halves, with the same clips
    a batch that fits gives; a single clip that does not fit is that item's failure, the others finish."""
    from seap_model.generation import render

    ids, prompts = [f"i{n}" for n in range(5)], [f"a dog barks {n}" for n in range(5)]
    refs, seeds = [tone(1.0, freq=300.0 + 100 * n) for n in range(5)], [0] * 5
    sampling = SamplingParams(steps=2, duration=DURATION)
    fits = render(tiny_pipeline, ids, prompts, refs, sampling, seeds)
    sizes, call = [], type(tiny_pipeline).__call__

    def limited(pipe, prompts, *args, **kwargs):
        sizes.append(len(prompts))
        if len(prompts) > 2 or any(p.endswith(" 4") for p in prompts):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return call(pipe, prompts, *args, **kwargs)

    try:
        type(tiny_pipeline).__call__ = limited
        split = render(tiny_pipeline, ids, prompts, refs, sampling, seeds)
    finally:
        type(tiny_pipeline).__call__ = call
    assert sizes == [5, 2, 3, 1, 2, 1, 1]  # 5 -> 2 + 3 -> 1 + 2 -> 1 + 1; item 4 alone still does not fit
    for a, b in zip(fits[:4], split[:4], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-3 * np.abs(a).max())  # batch-size float rounding only
    assert isinstance(split[4], torch.OutOfMemoryError)


def test_a_stochastic_sampler_is_fixed_by_the_seed_not_the_global_rng(tiny_pipeline):
    """DDPM draws fresh noise every step: from the per-item generators, so the global RNG does not matter and a
    clip does not depend on the batch it ran in."""
    with sampler_swapped(tiny_pipeline, "ddpm"):
        torch.manual_seed(1)
        first = _call(tiny_pipeline)
        torch.manual_seed(2)
        second = _call(tiny_pipeline)
        alone = tiny_pipeline(
            "a bell rings",
            tone(1.0, freq=880.0),
            duration=DURATION,
            num_inference_steps=4,
            generator=[torch.Generator().manual_seed(1)],
            progress=False,
        ).audios[0]
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(alone, first[1], rtol=0, atol=1e-3 * np.abs(first[1]).max())


def test_vocoder_iterations_for_one_call(tiny_pipeline):
    gl = tiny_pipeline.vocoder.griffin_lim
    saved = gl.n_iter
    fewer = _call(tiny_pipeline, vocoder_iterations=1)
    assert gl.n_iter == saved  # back to the vocoder's own after the call
    assert np.isfinite(fewer).all() and not np.allclose(fewer, _call(tiny_pipeline), atol=1e-3)
    with pytest.raises(ValueError, match="vocoder_iterations"):
        SamplingParams(vocoder_iterations=0)
    with pytest.raises(ValueError, match="vocoder_iterations must be > 0"):
        _call(tiny_pipeline, vocoder_iterations=0)
