"""The finetune stage on a tiny synthetic cache: it learns, saves a loadable pipeline, and resumes exactly."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from seap_model.config import ParamsError, parse_params
from seap_model.pipeline import SEAPPipeline
from seap_model.training.checkpoint import latest_checkpoint
from tests.runner import run_stage
from tests.tiny import make_cache, with_finetune

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    return root, make_cache(root)


def test_finetune_learns_and_saves_a_pipeline(tiny_setup):
    root, base = tiny_setup
    metrics = run_stage("finetune", parse_params(with_finetune(base, steps=40, checkpoint_every=40, log_every=5)))
    assert metrics["steps"] == 40
    val = [float(row.split(",")[1]) for row in (root / "report" / "val_loss.csv").read_text().splitlines()[1:]]
    assert len(val) == 8 and val[-1] < 0.9 * val[0]  # fixed noise and timesteps: a real decrease
    assert (root / "report" / "loss.png").is_file() and (root / "report" / "val_loss.csv").is_file()
    pipe = SEAPPipeline.from_pretrained(root / "pipe")
    assert pipe.reference_attention is not None and pipe.reference_form == "frames"  # the default: decoupled


def test_finetune_trains_the_text_only_baseline_alike(tmp_path):
    base = make_cache(tmp_path)
    cfg = with_finetune(base, steps=4, checkpoint_every=2, log_every=2, baseline=True)
    cfg["finetune"]["baseline_dir"] = str(tmp_path / "text_only")
    metrics = run_stage("finetune", parse_params(cfg))
    assert metrics["steps"] == 4 and metrics["text_only"]["steps"] == 4
    assert metrics["text_only"]["final_val_loss"] != metrics["final_val_loss"]  # another model, same data
    seap, text_only = (
        SEAPPipeline.from_pretrained(tmp_path / "pipe"),
        SEAPPipeline.from_pretrained(tmp_path / "text_only"),
    )
    assert seap.reference_attention is not None
    assert text_only.adapter is None and text_only.reference_attention is None
    assert text_only.unet.class_embedding is None
    assert (tmp_path / "report" / "text_only" / "val_loss.csv").is_file()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["seap", "text_only"]  # one folder each
    record = json.loads((tmp_path / "report" / "run.json").read_text())
    assert record["steps_trained"] == 4 and record["text_only"]["steps_trained"] == 4

    # A rerun resumes both from their own final checkpoints; turned off, the folder says why it holds no model.
    again = run_stage("finetune", parse_params(cfg))
    assert json.loads((tmp_path / "report" / "run.json").read_text())["text_only"]["resumed_from_step"] == 4
    assert again["text_only"]["final_val_loss"] == metrics["text_only"]["final_val_loss"]
    cfg["finetune"]["baseline"] = False
    run_stage("finetune", parse_params(cfg))
    assert [p.name for p in (tmp_path / "text_only").iterdir()] == ["not_trained.json"]
    assert "baseline: false" in (tmp_path / "text_only" / "not_trained.json").read_text()


STEPS, EVERY = 12, 3


def _proc_params(base: dict, root: Path, tag: str) -> Path:
    """Params for a child-process run writing under ``root/tag`` (same training setup for every tag)."""
    cfg = with_finetune(
        base,
        steps=STEPS,
        checkpoint_every=EVERY,
        log_every=1,
        checkpoint_dir=str(root / tag / "ckpt"),
        out_dir=str(root / tag / "pipe"),
        report_dir=str(root / tag / "report"),
    )
    path = root / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(**extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT), **extra}


def _run(params: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tests" / "finetune_proc.py"), str(params)],
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=300,
    )


def _run_until_step(params: Path, step: int) -> None:
    """Start a real `seap finetune` process and SIGKILL it once it has logged training step ``step``."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "finetune_proc.py"), str(params)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    for line in proc.stderr:
        m = STEP_LINE.search(line)
        if m and int(m.group(1)) == step:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself before step {step}"


STEP_LINE = re.compile(r"finetune step (\d+)/(\d+)")


def assert_resumed(rerun: subprocess.CompletedProcess, report: Path, last_saved: int, killed_at: int) -> int:
    """The rerun trained only the steps after a checkpoint saved before the kill; returns where it resumed."""
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trained = [int(m.group(1)) for m in STEP_LINE.finditer(rerun.stderr)]
    resumed = json.loads((report / "run.json").read_text())["resumed_from_step"]
    assert last_saved <= resumed <= killed_at and resumed % EVERY == 0, (resumed, last_saved, killed_at)
    assert trained == list(range(resumed + 1, STEPS + 1)), trained  # a fresh start would train 1..STEPS
    return resumed


def _unet(root: Path, tag: str) -> dict:
    return load_file(str(root / tag / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"))


def test_killed_finetune_process_resumes_and_ends_with_the_straight_runs_weights(tiny_setup, tmp_path):
    _, base = tiny_setup
    straight = _run(_proc_params(base, tmp_path, "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert [int(m.group(1)) for m in STEP_LINE.finditer(straight.stderr)] == list(range(1, STEPS + 1))
    reference = _unet(tmp_path, "straight")

    # 1. SIGKILL at a random training step (a checkpoint every 3 steps), then run again.
    killed_at = random.Random().randint(EVERY + 1, STEPS - 1)
    params = _proc_params(base, tmp_path, "killed")
    _run_until_step(params, killed_at)
    ckpt = tmp_path / "killed" / "ckpt" / "seap"
    backup = tmp_path / "killed-ckpt-backup"
    shutil.copytree(ckpt, backup)
    last_saved = (killed_at - 1) // EVERY * EVERY
    # The check fails when resuming is disabled: the same rerun with a loader that never finds a checkpoint.
    no_resume = _run(params, SEAP_TEST_NO_RESUME="1")
    with pytest.raises(AssertionError):
        assert_resumed(no_resume, tmp_path / "killed" / "report", last_saved, killed_at)
    shutil.rmtree(ckpt)
    shutil.copytree(backup, ckpt)  # back to the state the kill left
    resumed = assert_resumed(_run(params), tmp_path / "killed" / "report", last_saved, killed_at)
    assert resumed > 0
    after = _unet(tmp_path, "killed")
    assert after.keys() == reference.keys() and all(torch.equal(after[k], reference[k]) for k in reference)

    # 2. SIGKILL inside the second checkpoint save, between writing step 6 and pointing `latest` at it.
    params = _proc_params(base, tmp_path, "in-save")
    died = _run(params, SEAP_TEST_KILL_IN_SAVE="2")
    assert died.returncode == -signal.SIGKILL
    ckpt = tmp_path / "in-save" / "ckpt" / "seap"
    assert (ckpt / "latest").read_text().strip() == f"step-{EVERY:08d}"
    assert (ckpt / f"step-{2 * EVERY:08d}" / "progress.json").is_file()  # complete, but not yet named
    rerun = _run(params)
    assert assert_resumed(rerun, tmp_path / "in-save" / "report", EVERY, EVERY) == EVERY
    after = _unet(tmp_path, "in-save")
    assert all(torch.equal(after[k], reference[k]) for k in reference)
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", f"step-{STEPS:08d}"]  # older steps cleaned up


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_setup):
    root, base = tiny_setup
    cfg = parse_params(
        with_finetune(
            base, steps=6, checkpoint_every=2, log_every=100, checkpoint_dir=str(root / "c3"), out_dir=str(root / "p3")
        )
    )
    import seap_model.training.loop as ft

    original = ft.diffusion_loss
    calls = {"n": 0}

    def nan_at_five(*args, **kwargs):
        calls["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 5 else loss

    ft.diffusion_loss = nan_at_five
    try:
        with pytest.raises(FloatingPointError, match="loss is nan at step 5"):
            run_stage("finetune", cfg)
    finally:
        ft.diffusion_loss = original
    assert json.loads((latest_checkpoint(root / "c3" / "seap") / "progress.json").read_text())["step"] == 4


def test_train_encoder_needs_reference_waveforms_in_the_cache(tiny_setup):
    root, base = tiny_setup
    cfg = parse_params(with_finetune(base, steps=2, train_encoder=True, checkpoint_dir=str(root / "c5")))
    with pytest.raises(ValueError, match="no reference waveforms; re-run the cache stage"):
        run_stage("finetune", cfg)


def test_train_encoder_is_only_for_the_hasp_encoder():
    with pytest.raises(ParamsError, match="train_encoder needs encoder.type 'hasp'"):
        parse_params({"encoder": {"type": "yamnet"}, "finetune": {"train_encoder": True}})


def _initial_weights(params) -> dict:
    """The denoiser's weights before training, built the way the finetune stage builds them."""
    from seap_model.training.builders import build_denoiser

    from seap_model.training.dataset import load_split, load_text_cache

    torch.manual_seed(params.seed)
    tokens, _, _ = load_text_cache(params.finetune.cache_dir)
    model, _, _ = build_denoiser(params, load_split(params.finetune.cache_dir, "train"), tokens.shape[-1])
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_two_process_ddp_on_cpu_ranks_draw_different_batches_and_end_identical(tiny_setup, tmp_path):
    """`accelerate launch --num_processes 2` on CPU (gloo): each rank saves its own weights and a digest of every
    batch it drew; different batches yet identical weights means the gradients really were averaged."""
    _, base = tiny_setup
    cfg = with_finetune(
        base,
        steps=3,
        checkpoint_every=3,
        log_every=100,
        checkpoint_dir=str(tmp_path / "ckpt"),
        out_dir=str(tmp_path / "pipe"),
        report_dir=str(tmp_path / "report"),
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))
    launcher = Path(sys.executable).parent / "accelerate"
    result = subprocess.run(
        [
            str(launcher),
            "launch",
            "--multi_gpu",  # torchrun-style processes; with no GPU accelerate uses gloo on the CPU
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(ROOT / "tests" / "ddp_rank.py"),
            str(tmp_path / "params.yaml"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=_env(OMP_NUM_THREADS="1"),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    drawn = [json.loads((tmp_path / f"rank{r}_batches.json").read_text()) for r in (0, 1)]
    assert len(drawn[0]) == len(drawn[1]) == 3
    assert not set(drawn[0]) & set(drawn[1])  # no batch was drawn by both ranks
    initial = _initial_weights(parse_params(cfg))
    assert initial.keys() == ranks[0].keys()
    assert any(not torch.equal(ranks[0][k], initial[k]) for k in initial)  # and they did train
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["processes"] == 2
    assert (tmp_path / "pipe" / "model_index.json").is_file()


def test_finetune_seed_changes_the_training_run(tiny_setup):
    root, base = tiny_setup
    runs = {}
    for seed in (None, 1):
        tag = f"s{seed}"
        cfg = with_finetune(
            base,
            seed=seed,
            steps=2,
            log_every=1,
            checkpoint_dir=str(root / f"c{tag}"),
            report_dir=str(root / tag),
            out_dir=str(root / f"p{tag}"),
        )
        run_stage("finetune", parse_params(cfg))
        runs[seed] = load_file(str(root / f"p{tag}" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(runs[None][k], runs[1][k]) for k in runs[None])
