"""The distill stage and the few-step pipeline on a tiny synthetic cache; the consistency objective's pieces
against diffusers' own definitions; ``auto`` precision."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, LCMScheduler
from safetensors.torch import load_file

import seap_model.precision as precision
from seap_model.config import SamplingParams, parse_params
from seap_model.generation import resolved
from seap_model.models.text_encoder import encode_text
from seap_model.pipeline import SEAPPipeline
from seap_model.training.consistency import ConsistencyDistillation, Parameterisation, boundary_scalings
from seap_model.training.denoiser import StyledDenoiser
from tests.conftest import tone
from tests.runner import run_stage
from tests.tiny import make_cache, with_finetune

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tone_ref() -> torch.Tensor:
    return tone()


def count_unet_calls(pipe) -> dict:
    calls = {"n": 0}
    pipe.unet.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    return calls


def distill_config(base: dict, root: Path, **overrides) -> dict:
    cfg = with_finetune(base, steps=4, checkpoint_every=4)
    cfg["distill"] = {
        "enabled": True,
        "out_dir": str(root / "fast"),
        "checkpoint_dir": str(root / "distill_ckpt"),
        "report_dir": str(root / "distill_report"),
        "steps": 6,
        "batch_size": 4,
        "warmup_steps": 1,
        "checkpoint_every": 2,
        "log_every": 2,
        "guidance_dim": 16,
        "solver_steps": 10,
        **overrides,
    }
    return cfg


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    base = make_cache(root)
    cfg = distill_config(base, root)
    run_stage("finetune", parse_params(cfg))
    metrics = run_stage("distill", parse_params(cfg))
    return root, cfg, metrics


def test_the_distilled_pipeline_loads_and_samples_in_1_2_and_4_steps(distilled, tone_ref):
    root, _, metrics = distilled
    assert metrics["enabled"] and metrics["steps"] == 6 and metrics["sampling_steps"] == 2
    pipe = SEAPPipeline.from_pretrained(root / "fast")
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.default_steps == 2
    assert pipe.config.distilled_guidance == [[1.0, 8.0], [0.0, 8.0]]
    assert pipe.unet.config.time_cond_proj_dim == 16
    teacher = SEAPPipeline.from_pretrained(root / "pipe")
    want = teacher(["a dog barking"], tone_ref, duration=0.5, num_inference_steps=2, progress=False).audios.shape
    calls = count_unet_calls(pipe)
    for steps in (1, 2, 4):
        calls["n"] = 0
        out = pipe(
            ["a dog barking", "a bell ringing"], tone_ref, duration=0.5, num_inference_steps=steps, progress=False
        )
        assert out.audios.shape == (2, want[1]) and bool(torch.isfinite(torch.from_numpy(out.audios)).all())
        assert calls["n"] == steps  # one U-Net call per step: the guidance is the U-Net's input
    loss = [float(r.split(",")[1]) for r in (root / "distill_report" / "loss.csv").read_text().splitlines()[1:]]
    assert len(loss) == 3 and all(map(lambda v: v == v, loss))  # logged every 2 steps, finite


def test_the_distilled_pipeline_is_deterministic_and_round_trips(distilled, tone_ref, tmp_path):
    root, _, _ = distilled
    pipe = SEAPPipeline.from_pretrained(root / "fast")

    def clip(p, seed):
        g = [torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)]
        return p(["a dog barking"] * 2, tone_ref, duration=0.5, generator=g, progress=False).audios

    a, b = clip(pipe, 0), clip(pipe, 0)
    assert (a == b).all() and not (a == clip(pipe, 5)).all()
    pipe.save_pretrained(tmp_path / "again")
    assert (clip(SEAPPipeline.from_pretrained(tmp_path / "again"), 0) == a).all()


def test_distilled_guidance_is_checked_against_its_range_and_the_sampler_is_its_own(distilled, tone_ref):
    root, _, _ = distilled
    pipe = SEAPPipeline.from_pretrained(root / "fast")
    with pytest.raises(ValueError, match=r"style guidance 9.0 is outside \[0.0, 8.0\]"):
        pipe(["a dog barking"], tone_ref, duration=0.5, style_guidance_scale=9.0, progress=False)
    from seap_model.samplers import named_sampler

    with pytest.raises(ValueError, match="distilled pipeline samples with the consistency sampler"):
        named_sampler(pipe.scheduler, "dpmpp-2m")


def test_distillation_resumes_to_the_straight_runs_weights(tmp_path, monkeypatch):
    base = make_cache(tmp_path)
    straight = distill_config(base, tmp_path, out_dir=str(tmp_path / "a"), checkpoint_dir=str(tmp_path / "ca"))
    run_stage("finetune", parse_params(straight))
    run_stage("distill", parse_params(straight))
    killed = distill_config(base, tmp_path, out_dir=str(tmp_path / "b"), checkpoint_dir=str(tmp_path / "cb"))
    original, calls = ConsistencyDistillation.loss, {"n": 0}

    def dies_in_step_5(self, model, batch):
        calls["n"] += model.training
        if calls["n"] >= 5:
            raise KeyboardInterrupt
        return original(self, model, batch)

    with monkeypatch.context() as m:
        m.setattr(ConsistencyDistillation, "loss", dies_in_step_5)
        with pytest.raises(KeyboardInterrupt):
            run_stage("distill", parse_params(killed))
    metrics = run_stage("distill", parse_params(killed))
    assert json.loads((tmp_path / "distill_report" / "run.json").read_text())["resumed_from_step"] == 4
    a, b = (load_file(str(tmp_path / d / "unet" / "diffusion_pytorch_model.safetensors")) for d in ("a", "b"))
    assert metrics["steps"] == 6 and a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_distill_off_records_why_and_generate_fast_says_so(tmp_path):
    base = make_cache(tmp_path)
    cfg = distill_config(base, tmp_path, enabled=False)
    assert run_stage("distill", parse_params(cfg)) == {"enabled": False}
    marker = json.loads((tmp_path / "fast" / "not_trained.json").read_text())
    assert marker["trained"] is False and "distill.enabled" in marker["why"]
    assert (tmp_path / "distill_report" / "val_loss.csv").read_text() == "step,val_loss\n"
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(cfg))
    ref = tmp_path / "ref.wav"
    from seap_model.audio import save_audio

    save_audio(ref, torch.sin(torch.linspace(0, 800, 32000)).numpy() * 0.5, 16000)
    one_clip = ["--prompt", "a dog barking", "--reference", str(ref), "--out", str(tmp_path / "o.wav")]
    run = subprocess.run(
        [sys.executable, "-m", "seap_model.cli", "generate", "--params", str(params), "--fast", *one_clip],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 2 and "no pipeline was trained here: distill.enabled is false" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_the_parameterisation_inverts_diffusers_noising(prediction_type):
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 19, 500, 900])  # at 999 epsilon's x0 divides by sqrt(alpha_bar) ~ 1e-4: float error
    x_t = scheduler.add_noise(x0, eps, t)
    out = scheduler.get_velocity(x0, eps, t) if prediction_type == "v_prediction" else eps
    p = Parameterisation(scheduler)
    assert torch.allclose(p.x0(out, x_t, t), x0, atol=1e-4) and torch.allclose(p.eps(out, x_t, t), eps, atol=1e-4)
    assert torch.allclose(p.at(x0, eps, t), x_t, atol=1e-5)


def test_boundary_scalings_are_lcm_schedulers():
    lcm = LCMScheduler()
    t = torch.tensor([0, 1, 19, 499, 999])
    c_skip, c_out = boundary_scalings(t)
    for i, step in enumerate(t.tolist()):
        want = lcm.get_scalings_for_boundary_condition_discrete(step)
        assert abs(c_skip[i].item() - want[0]) < 1e-6 and abs(c_out[i].item() - want[1]) < 1e-6
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0  # the trajectory's end maps to itself


def test_the_teachers_guided_output_is_the_pipelines_guidance(tiny_pipeline):
    """The three branches in one call equal the pipeline's e(null) + g_t (e(text) - e(null)) + g_s (e(ref) -
    e(text)) from three separate calls."""
    pipe = tiny_pipeline
    teacher = StyledDenoiser(pipe.unet, pipe.adapter, None, pipe.reference_attention, pipe.reference_form == "frames")
    tokens, mask = pipe.encode_prompt(["a dog barking", "a bell ringing"])
    null_tokens, null_mask = encode_text(pipe.tokenizer, pipe.text_encoder, [""], pipe.config.max_text_length)
    g = torch.Generator().manual_seed(0)
    ref = torch.nn.functional.normalize(torch.randn(2, pipe.adapter.config.reference_dim, generator=g), dim=-1)
    batch = {
        "tokens": tokens,
        "mask": mask,
        "reference": ref,
        "keep_reference": torch.tensor([True, True]),
        "guidance": torch.tensor([[3.0, 5.0], [1.0, 0.0]]),
    }
    scheduler = DDPMScheduler(prediction_type="v_prediction")
    cd = ConsistencyDistillation(teacher, teacher, teacher, scheduler, null_tokens, null_mask, 10, 16, 0.95, 1e-3)
    x, t = torch.randn(2, *pipe.codec.latent_shape(16), generator=g), torch.tensor([500, 500])
    got = cd.teacher_noise(x, t, batch)

    def one(tok, msk, keep):
        return teacher(x, t, {**batch, "tokens": tok, "mask": msk, "keep_reference": keep})

    off = torch.tensor([False, False])
    null = one(null_tokens.expand(2, -1, -1), null_mask.expand(2, -1), off)
    text, styled = one(tokens, mask, off), one(tokens, mask, batch["keep_reference"])
    g_t, g_s = batch["guidance"][:, :1, None, None], batch["guidance"][:, 1:, None, None]
    want = null + g_t * (text - null) + g_s * (styled - text)
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()


def test_auto_precision_is_fp32_without_native_bf16_and_bf16_with_it(monkeypatch, caplog, tiny_pipeline, tone_ref):
    pipe = tiny_pipeline

    def clip(p):
        g = torch.Generator().manual_seed(0)
        return pipe(
            ["a dog barking"], tone_ref, duration=0.5, num_inference_steps=3, generator=g, precision=p, progress=False
        ).audios

    monkeypatch.setattr(precision, "_said", set())
    caplog.set_level(logging.INFO, logger="seap_model.precision")
    monkeypatch.setattr(precision, "native_bf16", lambda device=None: False)  # an AVX2-only CPU
    assert precision.sampling_precision("auto", "cpu") == "fp32"
    fp32 = clip("fp32")
    assert (clip("auto") == fp32).all()
    assert resolved(pipe, SamplingParams()).precision == "fp32"  # what sidecars and run records say
    monkeypatch.setattr(precision, "native_bf16", lambda device=None: True)  # AVX512-BF16/AMX, or a GPU
    assert precision.sampling_precision("auto", "cpu") == "bf16"
    ran = resolved(pipe, SamplingParams())
    assert (ran.precision, ran.steps, ran.duration) == ("bf16", pipe.default_steps, pipe.config.duration)
    auto, bf16 = clip("auto"), clip("bf16")
    assert (auto == bf16).all() and bool(torch.isfinite(torch.from_numpy(auto)).all())
    said = [r.getMessage() for r in caplog.records if "sampling precision auto" in r.getMessage()]
    assert said == [
        "sampling precision auto: fp32 on this cpu (CPU capability " + torch.backends.cpu.get_cpu_capability() + ")"
    ]
    with pytest.raises(ValueError, match="precision must be auto or one of fp32, bf16, fp16"):
        precision.sampling_precision("fp8", "cpu")


def test_the_pages_sampler_menu_reaches_the_distilled_pipeline(distilled, tmp_path):
    from seap_model.audio import save_audio
    from seap_model.serve import DISTILLED, Studio

    root, _, _ = distilled
    studio = Studio(root / "pipe", tmp_path / "runs", fast=root / "fast")
    assert studio.samplers[-1] == DISTILLED and studio.default_steps(DISTILLED) == 2
    assert studio.default_steps(studio.own) == studio.pipe.default_steps
    ref = tmp_path / "ref.wav"
    save_audio(ref, tone().numpy(), 16000)
    out, _, _, command, status, last, *_ = studio.generate("a dog barking", str(ref), 0, 2, 0.5, 2, DISTILLED, 4, 4, 0)
    assert out is not None and "Generated" in status, status
    assert f"--pipeline {root / 'fast'}" in command and last["fast"]
    alone = Studio(root / "fast", tmp_path / "alone")  # the distilled pipeline served by itself: its sampler only
    assert alone.samplers == [alone.own]
