"""End to end: the `ci` profile of the whole DAG through `dvc repro` and through the Prefect flow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PARTS = ("dvc.yaml", "configs", "data/sound_events", "seap_model", "tasks", "flows", ".dvc/config")
STAGES = {"download", "segment", "pretrain-encoder", "pretrain-vae", "cache", "finetune", "evaluate", "generate"}


def make_project(dest: Path) -> Path:
    """A fresh copy of the project (code, corpus, DAG) with the ci profile as its params.yaml."""
    for part in PROJECT_PARTS:
        src, dst = ROOT / part, dest / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    env = os.environ.copy()
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    seap = [sys.executable, "-m", "seap_model.cli"]
    subprocess.run(
        [
            *seap,
            "params",
            "--params",
            str(ROOT / "params.yaml"),
            "--overrides",
            "configs/ci.yaml",
            "--out",
            "params.yaml",
        ],
        cwd=dest,
        check=True,
        env=env,
    )
    return dest


def dvc(project: Path, *args: str) -> str:
    env = os.environ.copy()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `seap` and `dvc` of this venv
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def check_outputs(project: Path) -> dict:
    assert (project / "models/pipeline/model_index.json").is_file()
    metrics = json.loads((project / "outputs/evaluate/metrics.json").read_text())
    for key in (
        "yamnet_hit_seap",
        "yamnet_hit_text_only",
        "yamnet_hit_real",
        "yamnet_hit_real_codec_vocoder",
        "yamnet_chance",
        "fd_yamnet_seap",
        "style_similarity_seap",
        "style_similarity_text_only",
    ):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    assert metrics["yamnet_hit_real"] > metrics["yamnet_chance"]  # the real clips carry their label
    wavs = list((project / "outputs/generated").glob("*.wav"))
    assert len(wavs) == 4
    report = json.loads((project / "outputs/generated/report.json").read_text())
    assert report["failed"] == 0 and report["generated"] == 4
    return metrics


def stages_run(log: str) -> set[str]:
    return {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage '")}


def test_dvc_repro_ci_profile(tmp_path):
    project = make_project(tmp_path / "proj")
    first = dvc(project, "repro")
    assert stages_run(first) == STAGES
    check_outputs(project)
    # a second repro does nothing
    assert stages_run(dvc(project, "repro")) == set()
    assert "up to date" in dvc(project, "status")
    # one finetune param changed: only finetune and what follows rerun
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["finetune"]["lr"] = params["finetune"]["lr"] / 2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert stages_run(dvc(project, "repro")) == {"finetune", "evaluate", "generate"}
    check_outputs(project)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect API for the whole session (a local ephemeral server, no analytics)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


def test_prefect_flow_ci_profile_with_a_trained_encoder(tmp_path, monkeypatch, prefect_harness):
    """The Prefect flow, with the other encoder option: H/ASP fine-tuned with the adapter."""
    project = make_project(tmp_path / "proj")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["finetune"]["train_encoder"] = True
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(project)
    sys.path.insert(0, str(ROOT))
    from flows.pipeline import pipeline

    results = pipeline(params_path="params.yaml")
    assert set(results) == STAGES
    metrics = check_outputs(project)
    assert results["evaluate"]["yamnet_hit_seap"] == metrics["yamnet_hit_seap"]
    cached = load_file(str(project / "data/cache/train.safetensors"))
    assert cached["reference_audio"].shape == (cached["references"].shape[0], 32000)  # 2 s references
    weights = "diffusion_pytorch_model.safetensors"
    pretrained = load_file(str(project / "models/reference_encoder" / weights))
    trained = load_file(str(project / "models/pipeline/reference_encoder" / weights))
    assert pretrained.keys() == trained.keys()
    assert any(not torch.equal(pretrained[k], trained[k]) for k in pretrained)  # the encoder was trained
    stats = [k for k in pretrained if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(pretrained[k], trained[k]) for k in stats)  # BatchNorm stats kept


def test_nightly_deployment_has_its_schedule():
    sys.path.insert(0, str(ROOT))
    from flows.deploy import NIGHTLY_CRON, deployments

    (deployment,) = deployments("configs/ci.yaml")
    assert deployment.name == "seap-nightly"
    assert deployment.entrypoint.endswith("flows/pipeline.py:pipeline")
    assert deployment.parameters == {"params_path": "configs/ci.yaml"}
    assert [s.schedule.cron for s in deployment.schedules] == [NIGHTLY_CRON]
