"""``seap <stage>``: one subcommand per pipeline stage (the commands in dvc.yaml), plus ``seap generate``.

Every stage reads its parameters from ``--params`` (default ``params.yaml``). Bad input ends with a one-line
message naming the problem and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from seap_model.audio import AudioError
from seap_model.config import Params, ParamsError, SamplingParams, load_params, merge_params
from seap_model.data.corpus import CorpusError
from seap_model.data.download import DownloadError
from seap_model.data.manifest import ManifestError

log = logging.getLogger("seap")


def _stage(module: str, function: str) -> Callable[[Params], dict]:
    """Import a stage lazily, so ``seap --help`` and bad-input errors stay fast."""

    def run(params: Params) -> dict:
        import importlib

        return getattr(importlib.import_module(module), function)(params)

    return run


STAGES: dict[str, tuple[str, Callable[[Params], dict]]] = {
    "download": (
        "stage the data source (shipped corpus, folder, HTTP, S3, AudioSet-strong)",
        _stage("seap_model.data.download", "download"),
    ),
    "segment": (
        "build SERST: scenes with strong labels, 2 s references, splits",
        _stage("seap_model.data.segment", "build_serst"),
    ),
    "pretrain-encoder": (
        "pretrain the H/ASP reference encoder",
        _stage("seap_model.pretrain_encoder", "pretrain_encoder"),
    ),
    "pretrain-vae": ("fit the latent codec", _stage("seap_model.pretrain_vae", "pretrain_vae")),
    "cache": ("encode latents, captions and references once", _stage("seap_model.cache", "build_cache")),
    "finetune": ("train the adapter + U-Net, save the pipeline", _stage("seap_model.finetune", "finetune")),
    "evaluate": ("score SEAP against text-only, real and ceiling", _stage("seap_model.evaluate", "evaluate")),
    "generate-batch": (
        "generate WAVs for the test split or a prompts file",
        _stage("seap_model.generate", "generate_batch"),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in STAGES.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p = sub.add_parser("params", help="print (or write) the full, validated params with a profile's overrides")
    p.add_argument("--params", default="params.yaml", help="base params file (default: params.yaml)")
    p.add_argument("--overrides", help="YAML of overrides, e.g. configs/ci.yaml")
    p.add_argument("--out", help="write here instead of printing")
    g = sub.add_parser("generate", help="generate one clip from a prompt and a reference clip")
    g.add_argument("--prompt", required=True)
    g.add_argument("--reference", required=True, help="audio file of the sound event (any rate, mono or stereo)")
    g.add_argument("--out", required=True, help="output WAV path")
    g.add_argument("--pipeline", default="models/pipeline", help="saved SEAPPipeline folder")
    g.add_argument("--steps", type=int, default=SamplingParams().steps)
    g.add_argument("--guidance", type=float, default=SamplingParams().guidance)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--duration", type=float, default=2.08, help="seconds")
    return parser


def _generate(args: argparse.Namespace) -> None:
    from pathlib import Path

    if not args.prompt.strip():
        raise ValueError("prompt is empty")
    if not (Path(args.pipeline) / "model_index.json").is_file():
        raise FileNotFoundError(f"{args.pipeline}: no saved pipeline (run `dvc repro` or pass --pipeline)")
    from seap_model.generate import generate_one, load_reference
    from seap_model.pipeline import SEAPPipeline

    load_reference(args.reference, 16000)  # fail fast on a bad reference, before loading the models
    sampling = SamplingParams(steps=args.steps, guidance=args.guidance, seed=args.seed)
    pipe = SEAPPipeline.from_pretrained(args.pipeline)
    out = generate_one(pipe, args.prompt, args.reference, args.out, sampling, args.duration)
    print(out)


def _params(args: argparse.Namespace) -> None:
    import yaml

    params = load_params(args.params)
    if args.overrides:
        params = merge_params(params, args.overrides)
    text = yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text, end="")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "generate":
            _generate(args)
            return 0
        if args.command == "params":
            _params(args)
            return 0
        params = load_params(args.params)
        result = STAGES[args.command][1](params)
        log.info("%s done: %s", args.command, json.dumps(result, default=str)[:500])
        return 0
    except ParamsError as exc:
        print(f"seap {args.command}: {exc}", file=sys.stderr)
        return 2
    except (AudioError, ManifestError, CorpusError, DownloadError, FileNotFoundError) as exc:
        print(f"seap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        if args.command != "generate":  # inside a stage a ValueError may be a bug: keep its traceback
            raise
        print(f"seap generate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
