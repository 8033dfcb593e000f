"""Kills: run a stage of a project copy (``tests/test_e2e.make_project``, the ``ci`` profile), SIGKILL its whole
process group at a seeded moment, run it again the way a user would, and compare what the rerun left with the
straight run's outputs.

``Straight`` is the straight run: one project in which each stage ran once under ``dvc repro``, timed, with
the digests of its outputs. A trial copies it (``trial_copy``), makes the target stale the way a user finds it
(its outputs and scratch checkpoints gone, no run-cache to restore them from), kills ``dvc repro <stage>`` after
a fraction of the straight run's duration (``kill_after``), reruns it plainly and compares (``compare``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file

from seap_model.config import load_params
from seap_model.stages import resolve_path, stage
from seap_model.training.checkpoint import latest_checkpoint
from tests.conftest import tone
from tests.test_e2e import make_project, project_env

# The DAG up to generate in run order (pretrain-vae is upstream of cache but not a kill target), and the targets.
ORDER = ("download", "segment", "pretrain-encoder", "pretrain-vae", "pretrain-vocoder", "cache", "finetune", "generate")
BATCH = "batch"
TARGETS = ("download", "segment", "pretrain-encoder", "pretrain-vocoder", "cache", "finetune", "generate", BATCH)
# Figures that differ between two identical runs (wall-clock time): left out of the JSON files compared.
VOLATILE = {"seconds", "seconds_per_step", "generated_per_second"}
# A batch job's own counts say how the work was split between the killed run and the rerun.
RUN_COUNTS = {"generated", "skipped", "already_there", "uploaded"}
PARTIAL = (".partial", ".part", ".tmp")
BATCH_JOB, BATCH_OUT, BATCH_PIPELINE, BATCH_ITEMS = "jobs/job.jsonl", "outputs/batch", "models/tiny_pipeline", 12
TIMEOUT = 900
RWLOCK = Path(".dvc", "tmp", "rwlock")  # DVC's registry of live locks, relative to a project


def dvc_cmd(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "dvc"), *args]


def batch_cmd() -> list[str]:
    """The batch flow on a local job, 2 items per batch, with a tiny pipeline (a job does not need the DAG)."""
    return [
        sys.executable,
        *("-m", "flows.batch_generate", "--jobs", BATCH_JOB, "--out", BATCH_OUT, "--pipeline", BATCH_PIPELINE),
        *("--batch-size", "2", "--steps", "2", "--duration", "0.5", "--precision", "fp32"),
    ]


def command(target: str) -> list[str]:
    return batch_cmd() if target == BATCH else dvc_cmd("repro", target)


def run(project: Path, cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def dvc_lock_left_empty(project: Path, result: subprocess.CompletedProcess) -> bool:
    """Whether ``result`` stopped on the one kill outcome that is DVC's own: killed while it rewrote
    ``.dvc/tmp/rwlock`` in place, leaving it empty (docs/faults.md, "Found outside seap's code")."""
    lock = project / RWLOCK
    return (
        result.returncode != 0
        and "Unable to read RWLock-file" in result.stderr
        and lock.is_file()
        and not lock.read_text().strip()
    )


def kill_after(project: Path, cmd: list[str], env: dict, delay: float) -> bool:
    """Start ``cmd`` in a session of its own and SIGKILL its whole process group after ``delay`` seconds; True
    when it was killed, False when it had ended by itself before."""
    with open(project / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            proc.wait(timeout=delay)
            return False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True


def outputs(project: Path, target: str) -> list[Path]:
    """The paths the target writes: its declared DVC outputs (the batch job: its output folder)."""
    if target == BATCH:
        return [project / BATCH_OUT]
    params = load_params(project / "params.yaml")
    return [project / resolve_path(o.path, params) for o in stage(target).outs]


def scratch(project: Path, target: str) -> list[Path]:
    """A training stage's checkpoints: not outputs, but the state a killed run resumes from."""
    if target != "finetune":
        return []
    return [project / load_params(project / "params.yaml").finetune.checkpoint_dir]


def checkpoint_steps(project: Path) -> dict[str, int]:
    """The fine-tune's resume points: per system (``seap``, ``text_only``), the step of the complete checkpoint
    ``latest`` names (0: none)."""
    root = project / load_params(project / "params.yaml").finetune.checkpoint_dir
    steps = {}
    for system in ("seap", "text_only"):
        folder = latest_checkpoint(root / system)
        steps[system] = json.loads((folder / "progress.json").read_text())["step"] if folder else 0
    return steps


def resumed_from(project: Path) -> dict[str, int]:
    """Where the last fine-tune run resumed each system (its ``run.json``)."""
    record = json.loads((project / load_params(project / "params.yaml").finetune.report_dir / "run.json").read_text())
    return {"seap": record["resumed_from_step"], "text_only": record["text_only"]["resumed_from_step"]}


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []


def _strip(value, drop: set[str]):
    if isinstance(value, dict):
        return {k: _strip(v, drop) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [_strip(v, drop) for v in value]
    return value


def content(path: Path, drop: set[str]) -> object:
    """What a file holds for the comparison: its tensors (safetensors), its JSON less ``drop``, or its sha256."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix == ".json":
        try:
            return _strip(json.loads(path.read_text()), drop)
        except ValueError:
            pass
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(project: Path, target: str) -> dict[str, object]:
    """{relative path: content} of every file the target wrote."""
    drop = VOLATILE | (RUN_COUNTS if target == BATCH else set())
    return {
        f.relative_to(project).as_posix(): content(f, drop) for out in outputs(project, target) for f in _files(out)
    }


def differs(a: object, b: object, atol: float = 1e-6) -> bool:
    if isinstance(a, dict) and a and all(isinstance(v, torch.Tensor) for v in a.values()):
        return (
            not isinstance(b, dict)
            or a.keys() != b.keys()
            or any(
                a[k].shape != b[k].shape or not torch.allclose(a[k].double(), b[k].double(), rtol=0, atol=atol)
                for k in a
            )
        )
    return a != b


@dataclass
class Outcome:
    """What a rerun left, against the straight run: files lost, extra or different, partial files, duplicates."""

    lost: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.extra or self.different or self.partial or self.duplicated)


def item_outputs(project: Path, target: str) -> dict[str, int]:
    """Generate and batch: how many clips each item has in the output folder (one each: none duplicated)."""
    folder = outputs(project, target)[0]
    counts: dict[str, int] = {}
    for wav in folder.glob("*.wav"):
        item = wav.stem.rsplit("-", 1)[0]
        counts[item] = counts.get(item, 0) + 1
    return counts


def compare(project: Path, target: str, straight: dict[str, object]) -> Outcome:
    now = snapshot(project, target)
    out = Outcome(
        lost=sorted(straight.keys() - now.keys()),
        extra=sorted(now.keys() - straight.keys()),
        different=sorted(k for k in straight.keys() & now.keys() if differs(straight[k], now[k])),
    )
    for path in [*outputs(project, target), *scratch(project, target), project / "data"]:
        out.partial += [f.relative_to(project).as_posix() for f in _files(path) if f.name.endswith(PARTIAL)]
    if target in ("generate", BATCH):
        out.duplicated = sorted(item for item, n in item_outputs(project, target).items() if n > 1)
    return out


def write_batch_job(project: Path, pipeline) -> None:
    """A local batch job of ``BATCH_ITEMS`` rows on four tone references, and ``pipeline`` saved for it."""
    pipeline.save_pretrained(project / BATCH_PIPELINE)
    job = project / BATCH_JOB
    (job.parent / "refs").mkdir(parents=True, exist_ok=True)
    for i in range(4):
        sf.write(job.parent / "refs" / f"ref{i}.wav", tone(1.0, freq=300.0 + 200 * i).numpy(), 16000)
    prompts = ("a dog barking", "a bell ringing", "rain on a roof")
    rows = [
        {"id": f"item{i:02d}", "prompt": prompts[i % 3], "reference": f"refs/ref{i % 4}.wav"}
        for i in range(BATCH_ITEMS)
    ]
    job.write_text("".join(json.dumps(r) + "\n" for r in rows))


class Straight:
    """The straight run: a project in which each stage runs once when a trial first needs it, timed."""

    def __init__(self, root: Path, batch_pipeline=None, env_extra: dict | None = None):
        self.project = make_project(root / "straight")
        self.batch_pipeline = batch_pipeline  # the tiny pipeline a batch job runs on
        self.env_extra = env_extra or {}
        self.seconds: dict[str, float] = {}
        self.outputs: dict[str, dict[str, object]] = {}

    def env(self, project: Path) -> dict:
        return {**project_env(project), "OMP_NUM_THREADS": "2", **self.env_extra}

    def ready(self, target: str) -> None:
        """Run every stage up to ``target`` not yet run (the batch job: only itself)."""
        for name in [BATCH] if target == BATCH else ORDER[: ORDER.index(target) + 1]:
            if name in self.seconds:
                continue
            if name == BATCH:
                write_batch_job(self.project, self.batch_pipeline)
            cmd = batch_cmd() if name == BATCH else dvc_cmd("repro", "--single-item", name)
            start = time.perf_counter()
            done = run(self.project, cmd, self.env(self.project))
            assert done.returncode == 0, f"straight run of {name}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
            self.seconds[name] = time.perf_counter() - start
            self.outputs[name] = snapshot(self.project, name)

    def trial_copy(self, dest: Path, target: str) -> Path:
        """A copy of the project in which ``target`` has never run: its outputs, checkpoints and dvc.lock entry
        gone, and no run-cache (from either, DVC would check the straight run's outputs out instead of running)."""
        shutil.copytree(self.project, dest, symlinks=True)
        shutil.rmtree(dest / ".dvc" / "cache" / "runs", ignore_errors=True)
        lock = yaml.safe_load((dest / "dvc.lock").read_text())
        lock["stages"].pop(target, None)
        (dest / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
        for path in [*outputs(dest, target), *scratch(dest, target)]:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        return dest
