"""The one list of the seap DAG's stages: what each one runs, reads, needs and writes.

``seap <stage>`` (the CLI), the Prefect tasks in ``tasks/stages.py`` and ``dvc.yaml`` (written by ``seap dag
--write``, checked by ``seap dag --check`` and the tests) are all derived from ``STAGES``. A stage's code is the
module of its name in this package (``pretrain-encoder`` -> ``seap_model/stages/pretrain_encoder.py``) and
its entry point is the function of that name, called as ``<stage>(params, fingerprint)`` (``run``); stage modules
only orchestrate library code.

A training stage's checkpoints (``finetune.checkpoint_dir``, ``distill.checkpoint_dir``) are its own scratch
state, not outputs: DVC neither tracks nor deletes them, a killed run resumes from them only under the same
fingerprint (``seap_model.training.checkpoint``), and a fresh clone's ``dvc status`` does not miss them.

Paths are written the way dvc.yaml templates them from params.yaml (``${finetune.out_dir}``), so the same
entries serve DVC (which resolves them itself) and the Prefect flow (``resolve_path``). The code a stage
depends on is not listed here: it is the stage module's transitive ``seap_model`` imports
(``seap_model.fingerprint``).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from seap_model.config import Params

# Written into a model folder a stage declares but did not train (finetune.baseline off, distill.enabled off):
# {"trained": false, "why": ...}, so the output exists for DVC and a loader can say why it holds no model.
NOT_TRAINED = "not_trained.json"


def mark_not_trained(folder: Path, why: str) -> None:
    """``folder`` emptied down to the ``NOT_TRAINED`` marker saying ``why``: a declared model folder that a stage
    did not train."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / NOT_TRAINED).write_text(json.dumps({"trained": False, "why": why}) + "\n")


@dataclass(frozen=True)
class Output:
    """A path a stage writes. ``kind``: a DVC out, a metric or a plot; ``cache``: kept in DVC's cache (else git);
    ``persist``: survives a rerun (only what the stage itself knows how to resume from); ``plot``: axes."""

    path: str
    kind: Literal["out", "metric", "plot"] = "out"
    cache: bool = True
    persist: bool = False
    plot: dict[str, str] = field(default_factory=dict)
    why: str = ""


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    params: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[Output, ...]
    retries: int = 0  # Prefect retries (network stages)

    @property
    def module(self) -> str:
        return "seap_model.stages." + self.name.replace("-", "_")

    @property
    def function(self) -> str:
        return self.name.replace("-", "_")


STAGES: tuple[Stage, ...] = (
    Stage(
        "download",
        "stage the data source (shipped corpus, folder, HTTP, S3, AudioSet-strong) into data.raw_dir",
        params=("data.corpus", "data.raw_dir", "data.source"),
        deps=("${data.corpus}",),
        outs=(
            Output(
                "${data.raw_dir}",
                persist=True,
                why="a killed download of a large collection resumes (files are verified, the source is recorded)",
            ),
        ),
        retries=3,
    ),
    Stage(
        "segment",
        "build SERST: scenes with strong labels, 2 s references, train/val/test splits",
        params=("seed", "audio.sample_rate", "data"),
        deps=("${data.raw_dir}",),
        outs=(
            Output("${data.serst_dir}"),
            Output("${data.report_dir}/rejects.csv"),
            Output("${data.report_dir}/report.json", "metric", cache=False),
        ),
    ),
    Stage(
        "pretrain-encoder",
        "pretrain the H/ASP reference encoder (or set up frozen YAMNet) and score it",
        params=("seed", "audio", "data.serst_dir", "data.references.seconds", "encoder"),
        deps=("${data.serst_dir}",),
        outs=(
            Output("${encoder.out_dir}"),
            Output("${encoder.report_dir}/embeddings_pca.png"),
            Output("${encoder.report_dir}/metrics.json", "metric", cache=False),
            Output("${encoder.report_dir}/loss.csv", "plot", cache=False, plot={"x": "step", "y": "loss"}),
        ),
    ),
    Stage(
        "pretrain-vae",
        "fit the latent codec",
        params=("seed", "audio", "data.serst_dir", "codec", "finetune.unet.block_out_channels"),
        deps=("${data.serst_dir}",),
        outs=(
            Output("${codec.out_dir}"),
            Output("${codec.report_dir}/metrics.json", "metric", cache=False),
        ),
    ),
    Stage(
        "pretrain-vocoder",
        "train the learned vocoder (log-mel -> waveform) on the training split's audio",
        params=("seed", "audio", "data.serst_dir", "vocoder"),
        deps=("${data.serst_dir}",),
        outs=(
            Output("${vocoder.out_dir}"),
            Output("${vocoder.report_dir}/metrics.json", "metric", cache=False),
            Output("${vocoder.report_dir}/loss.csv", "plot", cache=False, plot={"x": "step", "y": "loss"}),
        ),
    ),
    Stage(
        "cache",
        "encode scene latents, captions and references once with the frozen models",
        params=(
            "audio",
            "data.serst_dir",
            "data.references.seconds",
            "encoder.out_dir",
            "codec.out_dir",
            "text_encoder",
            "finetune.cache_dir",
            "finetune.train_seconds",
            "finetune.train_encoder",
            "finetune.style",
            "finetune.adapter.reference",
            "finetune.reference_window",
            "seed",
        ),
        deps=("${data.serst_dir}", "${codec.out_dir}", "${encoder.out_dir}"),
        outs=(Output("${finetune.cache_dir}"),),
    ),
    Stage(
        "finetune",
        "train the adapter + U-Net on the cache (and the text-only baseline alike), save the SEAPPipelines",
        params=("seed", "audio", "encoder.out_dir", "codec.out_dir", "text_encoder", "vocoder", "finetune"),
        deps=("${finetune.cache_dir}", "${codec.out_dir}", "${encoder.out_dir}", "${vocoder.out_dir}"),
        outs=(
            Output("${finetune.out_dir}"),
            Output("${finetune.baseline_dir}"),
            Output("${finetune.report_dir}/metrics.json", "metric", cache=False),
            Output("${finetune.report_dir}/loss.csv", "plot", cache=False, plot={"x": "step", "y": "train_loss"}),
            Output("${finetune.report_dir}/val_loss.csv", "plot", cache=False, plot={"x": "step", "y": "val_loss"}),
            Output("${finetune.report_dir}/loss.png", "plot", cache=False),
            Output(
                "${finetune.report_dir}/text_only/val_loss.csv",
                "plot",
                cache=False,
                plot={"x": "step", "y": "val_loss"},
            ),
        ),
    ),
    Stage(
        "distill",
        "distill the fine-tuned pipeline into a 1-4 step one (guided latent consistency distillation)",
        params=("seed", "finetune", "distill"),
        deps=("${finetune.out_dir}", "${finetune.cache_dir}"),
        outs=(
            Output("${distill.out_dir}"),
            Output("${distill.report_dir}/metrics.json", "metric", cache=False),
            Output("${distill.report_dir}/loss.csv", "plot", cache=False, plot={"x": "step", "y": "train_loss"}),
            Output("${distill.report_dir}/val_loss.csv", "plot", cache=False, plot={"x": "step", "y": "val_loss"}),
        ),
    ),
    Stage(
        "evaluate",
        "score SEAP, the text-only baseline and SEAP without its reference under the paper, transfer, conflict, "
        "unseen-caption and memorisation protocols; write report.html",
        params=(
            "audio",
            "data.serst_dir",
            "finetune.out_dir",
            "finetune.baseline_dir",
            "finetune.train_seconds",
            "evaluate",
        ),
        deps=("${finetune.out_dir}", "${finetune.baseline_dir}", "${data.serst_dir}", "${evaluate.unseen_captions}"),
        outs=(
            Output("${evaluate.out_dir}/metrics.json", "metric", cache=False),
            Output("${evaluate.out_dir}/tables.json", cache=False),
            Output("${evaluate.out_dir}/tables.md", cache=False),
            Output("${evaluate.out_dir}/per_category.csv", cache=False),
            Output("${evaluate.out_dir}/report.html"),
            Output(
                "${evaluate.out_dir}/sweeps/guidance.csv",
                "plot",
                cache=False,
                plot={"x": "guidance", "y": "style_follow"},
            ),
            Output(
                "${evaluate.out_dir}/sweeps/steps.csv", "plot", cache=False, plot={"x": "steps", "y": "style_follow"}
            ),
            Output(
                "${evaluate.out_dir}/sweeps/reference_seconds.csv",
                "plot",
                cache=False,
                plot={"x": "reference_seconds", "y": "style_follow"},
            ),
            Output(
                "${evaluate.out_dir}/sweeps/style_guidance.csv",
                "plot",
                cache=False,
                plot={"x": "style_guidance", "y": "style_similarity"},
            ),
            Output("${evaluate.out_dir}/sweeps.png", "plot", cache=False),
        ),
    ),
    Stage(
        "generate",
        "generate clips for the test split or a prompts file (one clip: --prompt/--reference/--out)",
        params=("data.serst_dir", "finetune.out_dir", "generate"),
        deps=("${finetune.out_dir}", "${data.serst_dir}"),
        outs=(Output("${generate.out_dir}"),),
    ),
)

# dvc.yaml's top-level plot: SEAP's validation curve next to the text-only baseline's (header only unless
# ``finetune.baseline`` trained it). `dvc plots show`; `dvc plots diff` against another run or experiment.
TOP_LEVEL_PLOTS = [
    {
        "seap_vs_text_only_val_loss": {
            "title": "Validation loss (fixed batch, EMA weights): SEAP and the text-only baseline",
            "x": "step",
            "y": {
                "outputs/finetune/val_loss.csv": "val_loss",
                "outputs/finetune/text_only/val_loss.csv": "val_loss",
            },
        }
    }
]

BY_NAME = {stage.name: stage for stage in STAGES}
_TEMPLATE = re.compile(r"\$\{([a-z_][a-z0-9_.]*)\}")


def param_value(params: Params, key: str):
    """The value at a dotted params key (``finetune.unet.block_out_channels``)."""
    value = params
    for part in key.split("."):
        value = getattr(value, part)
    return value


def resolve_path(template: str, params: Params) -> str:
    """A registry path with its ``${params.key}`` templates filled in from ``params``."""
    return _TEMPLATE.sub(lambda m: str(param_value(params, m.group(1))), template)


def stage(name: str) -> Stage:
    if name not in BY_NAME:
        raise KeyError(f"no stage {name!r} (stages: {', '.join(BY_NAME)})")
    return BY_NAME[name]


def run(name: str, params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Run stage ``name`` (import its module, call its function) and return what it reports. ``fingerprint`` is
    what ``seap_model.fingerprint.stage_fingerprint(name, params)`` gives: the runner computes it (a stage never
    imports the module that reads the registry) and the stage may key its own records on it."""
    import importlib

    spec = stage(name)
    return getattr(importlib.import_module(spec.module), spec.function)(params, fingerprint)
