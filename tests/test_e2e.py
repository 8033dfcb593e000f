"""End to end: the `ci` profile of the whole DAG through `dvc repro` and through the Prefect flow, each taken
through the same sequence of changes: both must rerun exactly the stages the change makes stale."""

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

pytestmark = pytest.mark.slow  # CI runs them; `pytest -m 'not slow'` leaves them out while developing
ROOT = Path(__file__).resolve().parents[1]
PROJECT_PARTS = (
    "dvc.yaml",
    "configs",
    "data/sound_events",
    "data/captions",
    "seap_model",
    "tasks",
    "flows",
    ".dvc/config",
)
STAGES = {
    "download",
    "segment",
    "pretrain-encoder",
    "pretrain-vae",
    "pretrain-vocoder",
    "cache",
    "finetune",
    "distill",
    "evaluate",
    "generate",
}


def make_project(dest: Path) -> Path:
    """A fresh copy of the project (code, corpus, DAG) with the ci profile as its params.yaml."""
    for part in PROJECT_PARTS:
        src, dst = ROOT / part, dest / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    env = project_env(dest)
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


def project_env(project: Path) -> dict:
    """Run the project copy's own code (so editing it is a real code change), with this venv's `seap`/`dvc`."""
    env = os.environ.copy()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(project)
    return env


def dvc(project: Path, *args: str) -> str:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=project,
        env=project_env(project),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def check_outputs(project: Path) -> dict:
    assert (project / "models/pipeline/model_index.json").is_file()
    metrics = json.loads((project / "outputs/evaluate/metrics.json").read_text())
    assert (project / "models/text_only/model_index.json").is_file()  # the baseline trained alike
    for protocol in ("paper", "transfer"):
        for system in ("seap", "seap_no_reference", "text_only", "real", "real_codec_vocoder"):
            row = metrics[protocol][system]
            assert row["hit"] == row["hit"] and row["style"] == row["style"], (protocol, system)  # present, not NaN
    assert "follow_ci95_low" in metrics["transfer"]["seap"] and "kid_yamnet" in metrics["transfer"]["text_only"]
    assert metrics["transfer"]["real"]["hit"] > metrics["chance_hit"]  # the real clips carry their label
    assert (project / "outputs/evaluate/report.html").stat().st_size > 10_000
    wavs = list((project / "outputs/generated").glob("*.wav"))
    assert len(wavs) == 4
    report = json.loads((project / "outputs/generated/report.json").read_text())
    assert report["failed"] == 0 and report["generated"] == 4
    fast = json.loads((project / "models/pipeline_fast/model_index.json").read_text())
    assert fast["scheduler"][1] == "LCMScheduler" and fast["default_steps"] == 2  # the ci profile distils
    return metrics


def stages_run(log: str) -> set[str]:
    """Stages DVC ran, or restored from its run-cache (same deps and params as a past run: outputs checked out)."""
    ran = {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage '")}
    return ran | {line.split("'")[1] for line in log.splitlines() if "is cached - skipping run" in line}


def set_param(project: Path, section: str, key: str, change) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section][key] = change(params[section][key])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def append_comment(project: Path, module: str) -> None:
    path = project / module
    path.write_text(path.read_text() + "# edited by the test\n")


def unet_weights(project: Path) -> dict:
    return load_file(str(project / "models/pipeline/unet/diffusion_pytorch_model.safetensors"))


def finetune_run(project: Path) -> dict:
    return json.loads((project / "outputs/finetune/run.json").read_text())


# The same changes, applied to a DVC project and to a Prefect project, and the stages each must rerun.
FROM_FINETUNE = {"finetune", "distill", "evaluate", "generate"}
CHANGES = [
    ("first run", lambda p: None, STAGES),
    (  # also the "nothing changed" check of every other stage, folded into this run to save one DAG run
        "generated clips deleted",
        lambda p: shutil.rmtree(p / "outputs/generated"),
        {"generate"},
    ),
    (
        "finetune.lr halved",
        lambda p: set_param(p, "finetune", "lr", lambda v: v / 2),
        FROM_FINETUNE,
    ),
    (
        "encoder.steps + 1 (same counts everywhere: the old fingerprint resumed here)",
        lambda p: set_param(p, "encoder", "steps", lambda v: v + 1),
        {"pretrain-encoder", "cache", *FROM_FINETUNE},
    ),
    (
        "the sampler (pipeline.py) edited",
        lambda p: append_comment(p, "seap_model/pipeline.py"),
        FROM_FINETUNE,
    ),
    # Each evaluate-only change alone: together, either could stop triggering evaluate unnoticed.
    ("a metric (eval/metrics.py) edited", lambda p: append_comment(p, "seap_model/eval/metrics.py"), {"evaluate"}),
    ("evaluate.top_k changed", lambda p: set_param(p, "evaluate", "top_k", lambda v: v - 1), {"evaluate"}),
    ("nothing changed", lambda p: None, set()),
]


def run_changes(project: Path, runner) -> dict[str, set[str]]:
    """Apply CHANGES in order; after each, run the DAG and check what reran (and that training was fresh)."""
    seen = {}
    for name, change, expected in CHANGES:
        change(project)
        before = unet_weights(project) if (project / "models/pipeline").exists() else None
        seen[name] = runner()
        assert seen[name] == expected, f"{name}: reran {sorted(seen[name])}, expected {sorted(expected)}"
        if name.startswith("encoder.steps"):  # a new encoder: fine-tuning starts over and gives another U-Net
            assert finetune_run(project)["resumed_from_step"] == 0
            assert finetune_run(project)["steps_trained"] == 6
            after = unet_weights(project)
            assert any(not torch.equal(before[k], after[k]) for k in after)
        if expected:
            check_outputs(project)
    return seen


def test_dvc_repro_reruns_exactly_what_changed(tmp_path):
    project = make_project(tmp_path / "proj")
    run_changes(project, lambda: stages_run(dvc(project, "repro")))
    assert "up to date" in dvc(project, "status")


FLOW_RUN = """
import json
from flows.pipeline import pipeline
state = pipeline(params_path="params.yaml", return_state=True)
result = state.result()
summary = {"ran": result["ran"], "cached": result["cached"], "id": str(state.state_details.flow_run_id)}
print("RESULT " + json.dumps(summary))
"""


def test_prefect_flow_decides_like_dvc_with_a_trained_encoder(tmp_path, prefect_harness):
    """The Prefect flow, on the same sequence of changes, reruns the same stages as `dvc repro`; its project
    also takes the other encoder option (H/ASP fine-tuned with the adapter), which changes none of those sets.
    Each flow run is a fresh process running the project copy's code against the session's Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL

    project = make_project(tmp_path / "proj")
    set_param(project, "finetune", "train_encoder", lambda v: True)
    env = {**project_env(project), "PREFECT_API_URL": PREFECT_API_URL.value()}
    runs = []

    def runner() -> set[str]:
        done = subprocess.run([sys.executable, "-c", FLOW_RUN], cwd=project, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-4000:]
        (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        result = json.loads(line.removeprefix("RESULT "))
        assert set(result["ran"]) | set(result["cached"]) == STAGES
        runs.append(result)
        return set(result["ran"])

    run_changes(project, runner)

    cached = load_file(str(project / "data/cache/train.safetensors"))
    assert cached["reference_audio"].shape == (cached["references"].shape[0], 32000)  # 2 s references
    weights = "diffusion_pytorch_model.safetensors"
    pretrained = load_file(str(project / "models/reference_encoder" / weights))
    trained = load_file(str(project / "models/pipeline/reference_encoder" / weights))
    assert pretrained.keys() == trained.keys()
    assert any(not torch.equal(pretrained[k], trained[k]) for k in pretrained)  # the encoder was trained
    stats = [k for k in pretrained if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(pretrained[k], trained[k]) for k in stats)  # BatchNorm stats kept

    with get_client(sync_client=True) as client:
        first = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs[0]["id"]]))
        library = [log for log in client.read_logs(log_filter=first, limit=200) if log.name.startswith("seap_model.")]
        assert any("finetune step" in log.message for log in library), sorted({log.name for log in library})
        assert all(log.task_run_id is not None for log in library)  # each attributed to its stage's task run
        (artifact, *_) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["seap-evaluate-metrics"]))
        )
        assert "| transfer.seap.follow |" in artifact.data


def test_nightly_deployment_has_its_schedule():
    sys.path.insert(0, str(ROOT))
    from flows.deploy import NIGHTLY_CRON, deployments

    (deployment,) = deployments("configs/ci.yaml")
    assert deployment.name == "seap-nightly"
    assert deployment.entrypoint.endswith("flows/pipeline.py:pipeline")
    assert deployment.parameters == {"params_path": "configs/ci.yaml"}
    assert [s.schedule.cron for s in deployment.schedules] == [NIGHTLY_CRON]
