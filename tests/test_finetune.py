"""The finetune stage on a tiny synthetic cache: it learns, saves a loadable pipeline, and resumes exactly."""

from __future__ import annotations

import contextlib
import json
import logging
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

from seap_model.config import ParamsError, load_params, parse_params
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
    # Every output the registry declares for the stage exists (DVC fails the stage on a missing one: the main
    # job, baseline off, once stopped on the baseline's validation curve)
    from seap_model.stages import resolve_path, stage

    params = parse_params(cfg)
    missing = [o.path for o in stage("finetune").outs if not Path(resolve_path(o.path, params)).exists()]
    assert missing == []
    assert (tmp_path / "report" / "text_only" / "val_loss.csv").read_text() == "step,val_loss\n"


STEPS, EVERY = 12, 3


def _proc_params(base: dict, root: Path, tag: str, **overrides) -> Path:
    """Params for a child-process run writing under ``root/tag`` (same training setup for every tag)."""
    cfg = with_finetune(
        base,
        **{"steps": STEPS, "checkpoint_every": EVERY, "log_every": 1, **overrides},
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


@contextlib.contextmanager
def _reproduce_with(note: str):
    """Append ``note`` (how to rerun this case) to the message of a failing assertion inside."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{note}") from exc


def _unet(root: Path, tag: str) -> dict:
    return load_file(str(root / tag / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"))


def test_killed_finetune_process_resumes_and_ends_with_the_straight_runs_weights(tiny_setup, tmp_path):
    _, base = tiny_setup
    straight = _run(_proc_params(base, tmp_path, "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert [int(m.group(1)) for m in STEP_LINE.finditer(straight.stderr)] == list(range(1, STEPS + 1))
    reference = _unet(tmp_path, "straight")

    # 1. SIGKILL at a seeded random training step (a checkpoint every 3 steps), then run again. The seed is fixed,
    # so every run (and CI) kills at the same step; SEAP_TEST_KILL_SEED picks another, and a failure names it.
    seed = int(os.environ.get("SEAP_TEST_KILL_SEED", "0"))
    killed_at = random.Random(seed).randint(EVERY + 1, STEPS - 1)
    where = f"killed at step {killed_at} (SEAP_TEST_KILL_SEED={seed})"
    with _reproduce_with(where):
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


def _launch_ddp(params: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    """`accelerate launch --num_processes 2` of tests/ddp_rank.py on CPU (gloo), writing its records to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    launcher = Path(sys.executable).parent / "accelerate"
    return subprocess.run(
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
            str(params),
            str(out),
        ],
        capture_output=True,
        text=True,
        env=_env(OMP_NUM_THREADS="1", **env),
        timeout=300,
    )


def _ranks(out: Path) -> tuple[list[dict], list[list[str]]]:
    """Each rank's final weights and the digests of the batches it drew, in order."""
    weights = [load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)]
    drawn = [json.loads((out / f"rank{r}_batches.json").read_text()) for r in (0, 1)]
    return weights, drawn


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


DDP_STEPS = 4


def test_two_process_ddp_on_cpu_ranks_draw_different_batches_end_identical_and_resume_per_rank(
    tiny_setup, tmp_path, caplog
):
    """`accelerate launch --num_processes 2` on CPU (gloo): each rank saves its own weights and a digest of every
    batch it drew; different batches yet identical weights means the gradients really were averaged. A run
    stopped after its step-2 checkpoint and launched again goes on with each rank's own batch sequence (not rank
    0's twice) and ends with the uninterrupted run's weights; one process does not resume the 2-process
    checkpoint."""
    _, base = tiny_setup
    ddp = {"steps": DDP_STEPS, "checkpoint_every": 2, "log_every": 100}
    params = _proc_params(base, tmp_path, "straight", **ddp)
    result = _launch_ddp(params, tmp_path / "straight")
    assert result.returncode == 0, result.stderr[-3000:]
    straight, drawn = _ranks(tmp_path / "straight")
    assert _equal(straight[0], straight[1])
    assert len(drawn[0]) == len(drawn[1]) == DDP_STEPS
    assert not set(drawn[0]) & set(drawn[1])  # no batch was drawn by both ranks
    initial = _initial_weights(load_params(params))
    assert initial.keys() == straight[0].keys()
    assert any(not torch.equal(straight[0][k], initial[k]) for k in initial)  # and they did train
    assert json.loads((tmp_path / "straight" / "report" / "metrics.json").read_text())["processes"] == 2
    assert (tmp_path / "straight" / "pipe" / "model_index.json").is_file()

    # Stopped in step 3 on both ranks: the step-2 checkpoint is the latest.
    params = _proc_params(base, tmp_path, "stopped", **ddp)
    assert _launch_ddp(params, tmp_path / "stopped", SEAP_TEST_DIE_IN_STEP="3").returncode != 0
    ckpt = tmp_path / "stopped" / "ckpt" / "seap"
    assert (ckpt / "latest").read_text().strip() == "step-00000002"
    backup = tmp_path / "stopped-ckpt"
    shutil.copytree(ckpt, backup)

    # One process does not take over the two ranks' sampler states: a log line, and training from step 0.
    caplog.set_level(logging.INFO, logger="seap_model.training.checkpoint")
    assert run_stage("finetune", load_params(params))["steps"] == DDP_STEPS
    not_resuming = [r.getMessage() for r in caplog.records if "not resuming" in r.getMessage()]
    assert len(not_resuming) == 1 and "saved by 2 processes, this run has 1" in not_resuming[0], not_resuming
    assert json.loads((tmp_path / "stopped" / "report" / "run.json").read_text())["resumed_from_step"] == 0

    # Two processes resume it, each rank from its own sampler state.
    shutil.rmtree(ckpt)
    shutil.copytree(backup, ckpt)
    result = _launch_ddp(params, tmp_path / "resumed")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "stopped" / "report" / "run.json").read_text())["resumed_from_step"] == 2
    resumed, after = _ranks(tmp_path / "resumed")
    assert len(after[0]) == len(after[1]) == DDP_STEPS - 2
    assert not set(after[0]) & set(after[1]), "after the resume both ranks drew the same batches"
    assert after == [drawn[0][2:], drawn[1][2:]]  # each rank goes on with its own uninterrupted sequence
    assert _equal(resumed[0], resumed[1])
    assert _equal(resumed[0], straight[0])  # as the 1-process resume: exactly the uninterrupted run's weights


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
