"""Training paths beyond the default: the text-only and concat ablations, gradient accumulation, Adafactor,
condition-dropout rates, and resuming a checkpoint only from the same inputs."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import seap_model.training.loop as loop
from seap_model.config import FinetuneParams, parse_params
from seap_model.pipeline import SEAPPipeline
from seap_model.training.batches import BatchSampler
from seap_model.training.builders import build_denoiser
from seap_model.training.dataset import load_split, load_text_cache
from seap_model.training.schedulers import training_scheduler
from tests.conftest import tone
from tests.runner import run_stage
from tests.tiny import dies_during_step, generate_pair, make_cache, with_finetune

LEARN = {"steps": 40, "checkpoint_every": 40, "log_every": 5, "lr": 1e-3}


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("paths")
    return root, make_cache(root)


def _params(base: dict, root: Path, tag: str, **finetune_overrides) -> dict:
    """``base`` with its own checkpoint, pipeline and report folders under ``root / tag``."""
    return with_finetune(
        base,
        checkpoint_dir=str(root / tag / "ckpt"),
        out_dir=str(root / tag / "pipe"),
        report_dir=str(root / tag / "report"),
        **finetune_overrides,
    )


def _val_losses(report: Path) -> list[float]:
    return [float(row.split(",")[1]) for row in (report / "val_loss.csv").read_text().splitlines()[1:]]


def _assert_learned(report: Path, rows: int = 8) -> None:
    val = _val_losses(report)
    assert len(val) == rows and all(math.isfinite(v) for v in val)
    assert val[-1] < 0.9 * val[0], val  # fixed validation noise and timesteps: a real decrease


def _run_record(report: Path) -> dict:
    return json.loads((report / "run.json").read_text())


# 1. finetune.style: off (the text-only baseline)


def test_style_off_trains_a_text_only_pipeline_that_ignores_the_reference(tiny_setup):
    root, base = tiny_setup
    metrics = run_stage("finetune", parse_params(_params(base, root, "off", style="off", **LEARN)))
    assert metrics["steps"] == 40
    _assert_learned(root / "off" / "report")

    index = json.loads((root / "off" / "pipe" / "model_index.json").read_text())
    assert index["adapter"] == [None, None]
    assert not (root / "off" / "pipe" / "adapter").exists()
    pipe = SEAPPipeline.from_pretrained(root / "off" / "pipe")
    assert pipe.adapter is None and pipe.unet.class_embedding is None

    with_ref = generate_pair(pipe, tone(1.0)).audios
    assert np.isfinite(with_ref).all()
    assert np.array_equal(with_ref, generate_pair(pipe, None).audios)  # the reference changes nothing
    assert np.array_equal(with_ref, generate_pair(pipe, tone(1.0, freq=2500.0)).audios)
    # ... while the text still does: the baseline is a text-conditioned model
    swapped = generate_pair(pipe, None, prompts=("a bell ringing", "a dog barking")).audios
    assert not np.allclose(with_ref, swapped)


# 2. finetune.style: concat


def test_style_concat_trains_an_adapter_whose_reference_matters(tiny_setup):
    root, base = tiny_setup
    pooled = {"heads": 2, "reference": "pooled"}  # the concat ablation joins one pooled vector to the timestep
    metrics = run_stage(
        "finetune", parse_params(_params(base, root, "concat", style="concat", adapter=pooled, **LEARN))
    )
    assert metrics["steps"] == 40
    _assert_learned(root / "concat" / "report")

    config = json.loads((root / "concat" / "pipe" / "adapter" / "config.json").read_text())
    assert config["mode"] == "concat"
    pipe = SEAPPipeline.from_pretrained(root / "concat" / "pipe")
    assert pipe.adapter is not None and pipe.adapter.config.mode == "concat"
    assert not hasattr(pipe.adapter, "attention") and hasattr(pipe.adapter, "project")
    assert pipe.unet.class_embedding.linear_2.weight.abs().max() > 0  # the zero-initialised style path was trained

    tokens, mask = pipe.encode_prompt(["a dog barking", "a dog barking"])
    refs = torch.nn.functional.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(3)), dim=-1)
    with torch.no_grad():
        style = pipe.adapter(tokens, mask, refs)
    assert style.shape == (2, tokens.shape[-1]) and torch.isfinite(style).all()
    assert not torch.allclose(style[0], style[1], atol=1e-5)  # same text, different reference, different style

    with_ref = generate_pair(pipe, tone(1.0)).audios
    assert np.isfinite(with_ref).all()
    assert not np.allclose(with_ref, generate_pair(pipe, None).audios)  # the trained style path changes the output
    assert not np.allclose(with_ref, generate_pair(pipe, tone(1.0, freq=2500.0)).audios)


# 3. Gradient accumulation


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_accumulating_two_half_batches_gives_the_full_batch_gradient(tiny_setup):
    _, base = tiny_setup
    # the paper's adapter path, whose zero-initialised style path is perturbed below
    params = parse_params(with_finetune(base, style="cross_attention", adapter={"heads": 2, "reference": "pooled"}))
    fp = params.finetune
    train = load_split(fp.cache_dir, "train")
    tokens, mask, _ = load_text_cache(fp.cache_dir)
    torch.manual_seed(0)
    model, _, trainable = build_denoiser(params, train, tokens.shape[-1])
    model = model.float().train()
    with torch.no_grad():  # the style path starts at zero; perturb it so that the adapter gets gradients too
        model.unet.class_embedding.linear_2.weight.normal_(std=0.1)
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
    scheduler = training_scheduler(fp)
    accelerator = loop.make_accelerator("no")
    batch = BatchSampler(train, tokens, mask, fp, seed=5).sample(4)
    halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]

    model.zero_grad(set_to_none=True)
    whole_loss = loop.accumulate_gradients(model, [batch], loop.denoising_objective(scheduler, fp), accelerator)
    whole = _grads(model)
    model.zero_grad(set_to_none=True)
    split_loss = loop.accumulate_gradients(model, halves, loop.denoising_objective(scheduler, fp), accelerator)
    split = _grads(model)

    assert whole_loss == pytest.approx(split_loss, rel=1e-5)
    assert whole.keys() == split.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(whole) == len(trainable)
    adapter_grad = sum(whole[n].abs().sum().item() for n in whole if n.startswith("adapter."))
    assert adapter_grad > 0 and sum(g.abs().sum().item() for g in whole.values()) > 0
    for name in whole:
        assert torch.allclose(whole[name], split[name], rtol=1e-4, atol=1e-7), name
    # and one half alone is not the same gradient (the check can fail)
    model.zero_grad(set_to_none=True)
    loop.accumulate_gradients(model, halves[:1], loop.denoising_objective(scheduler, fp), accelerator)
    assert any(not torch.allclose(whole[n], g, rtol=1e-4, atol=1e-7) for n, g in _grads(model).items())


def test_finetune_with_accumulation_draws_two_batches_per_optimiser_step(tiny_setup, monkeypatch):
    root, base = tiny_setup
    drawn = {"n": 0}
    at_step: list[int] = []
    original_sample = BatchSampler.sample

    def counting_sample(self, batch_size):
        drawn["n"] += 1
        assert batch_size == 4
        return original_sample(self, batch_size)

    original_make_optimizer = loop.make_optimizer

    def recording_optimizer(groups, fp):
        optimizer = original_make_optimizer(groups, fp)
        optimizer.register_step_post_hook(lambda *_: at_step.append(drawn["n"]))
        return optimizer

    monkeypatch.setattr(BatchSampler, "sample", counting_sample)
    monkeypatch.setattr(loop, "make_optimizer", recording_optimizer)
    metrics = run_stage(
        "finetune",
        parse_params(_params(base, root, "accum", steps=3, gradient_accumulation=2, checkpoint_every=100, log_every=1)),
    )
    assert metrics["steps"] == 3
    assert at_step == [2, 4, 6] and drawn["n"] == 6
    report = root / "accum" / "report"
    assert [int(r.split(",")[0]) for r in (report / "loss.csv").read_text().splitlines()[1:]] == [1, 2, 3]
    latest = (root / "accum" / "ckpt" / "seap" / "latest").read_text().strip()
    assert json.loads((root / "accum" / "ckpt" / "seap" / latest / "progress.json").read_text())["step"] == 3


# 4. Adafactor


def test_adafactor_learns_and_checkpoints_its_own_state(tiny_setup):
    root, base = tiny_setup
    metrics = run_stage("finetune", parse_params(_params(base, root, "adafactor", optimizer="adafactor", **LEARN)))
    assert metrics["steps"] == 40
    _assert_learned(root / "adafactor" / "report")

    ckpt = root / "adafactor" / "ckpt" / "seap"
    folder = ckpt / (ckpt / "latest").read_text().strip()
    assert folder.name == "step-00000040"
    state = torch.load(folder / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    assert state, "no optimizer state saved"
    keys = set().union(*(s.keys() for s in state.values()))
    assert {"exp_avg_sq_row", "exp_avg_sq_col"} <= keys or "exp_avg_sq" in keys, keys
    assert "exp_avg_sq_row" in keys  # conv/linear weights are factored
    assert "exp_avg" not in keys  # not AdamW's first moment


# 5. Condition-dropout rates


def _case_counts(batch: dict, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, int]:
    empty = (batch["tokens"] == tokens[0]).flatten(1).all(1)
    assert torch.equal(empty, (batch["mask"] == mask[0]).all(1))
    keep = batch["keep_reference"]
    return {
        "both": int((empty & ~keep).sum()),
        "style": int((~empty & ~keep).sum()),
        "text": int((empty & keep).sum()),
        "none": int((~empty & keep).sum()),
    }


def test_condition_dropout_rates_and_what_each_case_drops(tiny_setup):
    _, base = tiny_setup
    fp = parse_params(base).finetune
    train = load_split(fp.cache_dir, "train")
    tokens, mask, _ = load_text_cache(fp.cache_dir)
    assert all(w.references for w in train.windows)  # so keep_reference is False only by dropout
    rates = {"both": 0.2, "style": 0.3, "text": 0.1, "none": 0.4}
    sampler = BatchSampler(train, tokens, mask, FinetuneParams(drop_both=0.2, drop_style=0.3, drop_text=0.1), seed=11)
    n = 4000
    batch = sampler.sample(n)
    counts = _case_counts(batch, tokens, mask)
    assert sum(counts.values()) == n
    for case, rate in rates.items():
        se = math.sqrt(rate * (1 - rate) / n)
        assert abs(counts[case] / n - rate) < 4 * se, (case, counts[case] / n, rate)

    # Which window each row came from (every window's crop is distinct), to check what was kept.
    crops = torch.stack([train.crop(w) for w in train.windows]).flatten(1)
    which = (batch["latents"].flatten(1)[:, None] == crops[None]).all(-1)
    assert (which.sum(1) == 1).all()
    windows = [train.windows[i] for i in which.int().argmax(1).tolist()]
    empty = (batch["tokens"] == tokens[0]).flatten(1).all(1)
    for i, w in enumerate(windows):
        if not empty[i]:  # no drop and style-only drop: the window's own caption
            assert torch.equal(batch["tokens"][i], tokens[w.caption]) and torch.equal(batch["mask"][i], mask[w.caption])
        assert torch.equal(batch["reference"][i], train.references[w.references[0]])
    assert counts["both"] and counts["style"] and counts["text"]  # every case happened

    never = BatchSampler(train, tokens, mask, FinetuneParams(drop_both=0, drop_style=0, drop_text=0), seed=11)
    for _ in range(50):
        b = never.sample(16)
        assert b["keep_reference"].all()
        assert _case_counts(b, tokens, mask) == {"both": 0, "style": 0, "text": 0, "none": 16}


def test_condition_dropout_cases_are_disjoint_and_consistent_per_row(tiny_setup):
    """Row by row: a dropped-both row has the empty caption and no reference, a style-only drop keeps the
    caption, a text-only drop keeps the reference (the cases come from one uniform draw per row)."""
    _, base = tiny_setup
    fp = parse_params(base).finetune
    train = load_split(fp.cache_dir, "train")
    tokens, mask, _ = load_text_cache(fp.cache_dir)
    for drops, expected in (
        ({"drop_both": 1.0, "drop_style": 0.0, "drop_text": 0.0}, (True, False)),
        ({"drop_both": 0.0, "drop_style": 1.0, "drop_text": 0.0}, (False, False)),
        ({"drop_both": 0.0, "drop_style": 0.0, "drop_text": 1.0}, (True, True)),
    ):
        batch = BatchSampler(train, tokens, mask, FinetuneParams(**drops), seed=2).sample(32)
        empty = (batch["tokens"] == tokens[0]).flatten(1).all(1)
        assert (empty == expected[0]).all(), drops
        assert (batch["keep_reference"] == expected[1]).all(), drops
        if expected[0]:
            assert (batch["mask"] == mask[0]).all()


# 6. The checkpoint resumes only from the same inputs


def test_checkpoint_resumes_only_from_the_same_cache_content(tmp_path, monkeypatch, caplog):
    base = make_cache(tmp_path)  # its own cache: this test rewrites it
    cfg = parse_params(_params(base, tmp_path, "run", steps=6, checkpoint_every=2, log_every=1))
    ckpt, report = tmp_path / "run" / "ckpt" / "seap", tmp_path / "run" / "report"

    # First run, stopped during step 5: the checkpoint of step 4 is the latest.
    with monkeypatch.context() as m:
        m.setattr(loop, "diffusion_loss", dies_during_step(5))
        with pytest.raises(KeyboardInterrupt):
            run_stage("finetune", cfg)
    assert (ckpt / "latest").read_text().strip() == "step-00000004"
    backup = tmp_path / "ckpt-step4"
    shutil.copytree(ckpt, backup)

    # The same shapes, slightly different latents: the checkpoint is not resumed.
    train_file = Path(cfg.finetune.cache_dir) / "train.safetensors"
    original_bytes = train_file.read_bytes()
    tensors = load_file(str(train_file))
    tensors["latents"] = tensors["latents"] + 1e-3
    save_file(tensors, str(train_file))
    caplog.set_level(logging.INFO, logger="seap_model.training.checkpoint")
    metrics = run_stage("finetune", cfg)
    not_resuming = [r.getMessage() for r in caplog.records if "not resuming" in r.getMessage()]
    assert len(not_resuming) == 1, [r.getMessage() for r in caplog.records]
    assert "(step 4)" in not_resuming[0] and "its inputs changed" in not_resuming[0], not_resuming[0]
    assert metrics["steps"] == 6
    assert _run_record(report)["resumed_from_step"] == 0 and _run_record(report)["steps_trained"] == 6
    assert [int(r.split(",")[0]) for r in (report / "loss.csv").read_text().splitlines()[1:]] == [1, 2, 3, 4, 5, 6]

    # The original cache and a fresh copy of the step-4 checkpoint, the same params: it resumes at step 4.
    train_file.write_bytes(original_bytes)
    shutil.rmtree(ckpt)
    shutil.copytree(backup, ckpt)
    caplog.clear()
    metrics = run_stage("finetune", cfg)
    assert not [r for r in caplog.records if "not resuming" in r.getMessage()]
    assert metrics["steps"] == 6
    assert _run_record(report)["resumed_from_step"] == 4 and _run_record(report)["steps_trained"] == 2
    # the history up to step 4 came from the checkpoint (the run was killed before writing any report)
    assert [int(r.split(",")[0]) for r in (report / "loss.csv").read_text().splitlines()[1:]] == [1, 2, 3, 4, 5, 6]


def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(monkeypatch, caplog):
    monkeypatch.setattr(loop.torch.cuda, "is_available", lambda: False)
    caplog.set_level(logging.INFO, logger="seap_model.training.loop")
    monkeypatch.setattr(loop, "native_bf16", lambda: True)
    assert loop.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(loop, "native_bf16", lambda: False)  # an AVX2-only CPU: bf16 would be emulated
    assert loop.resolve_precision("auto") == "no"
    assert loop.make_accelerator("auto").mixed_precision == "no"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # asked for explicitly, bf16 is obeyed, with a warning that names the cost
    assert loop.resolve_precision("bf16") == "bf16"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "far slower than fp32" in warnings[0], warnings
    assert loop.resolve_precision("no") == "no" and loop.resolve_precision("fp16") == "fp16"
    assert parse_params({}).finetune.mixed_precision == "auto"


def test_a_checkpoint_is_not_resumed_in_another_precision(tiny_setup, monkeypatch, caplog):
    # `auto` resolves per machine: a run checkpointed in bf16 and resumed where auto means fp32 starts again.
    root, base = tiny_setup
    steps = {"steps": 4, "checkpoint_every": 2, "log_every": 1}
    cfg = parse_params(_params(base, root, "precision", **steps, mixed_precision="auto"))
    ckpt, report = root / "precision" / "ckpt" / "seap", root / "precision" / "report"
    monkeypatch.setattr(loop.torch.cuda, "is_available", lambda: False)
    with monkeypatch.context() as m:
        m.setattr(loop, "native_bf16", lambda: True)
        m.setattr(loop, "diffusion_loss", dies_during_step(3))
        with pytest.raises(KeyboardInterrupt):
            run_stage("finetune", cfg)
    assert (ckpt / "latest").read_text().strip() == "step-00000002"
    monkeypatch.setattr(loop, "native_bf16", lambda: False)
    caplog.set_level(logging.INFO, logger="seap_model.training.checkpoint")
    assert run_stage("finetune", cfg)["steps"] == 4
    not_resuming = [r.getMessage() for r in caplog.records if "not resuming" in r.getMessage()]
    assert len(not_resuming) == 1 and "its precision changed" in not_resuming[0], not_resuming
    assert _run_record(report)["resumed_from_step"] == 0 and _run_record(report)["mixed_precision"] == "no"
