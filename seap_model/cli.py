"""``seap <stage>``: one subcommand per pipeline stage (the registry in ``seap_model.stages``), plus ``seap params``
and ``seap dag``; ``seap generate --prompt ... --reference ... --out ...`` generates a single clip.

Every stage reads its parameters from ``--params`` (default ``params.yaml``). Bad input ends with a one-line
message naming the problem and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from seap_model import __version__
from seap_model.config import SamplingParams, load_params, merge_params
from seap_model.errors import SeapError
from seap_model.fingerprint import stage_fingerprint
from seap_model.flags import add_model_flags, model_from_flags
from seap_model.progress import keep_credentials_out_of_logs, quiet_library_bars
from seap_model.stages import NOT_TRAINED, STAGES, run

log = logging.getLogger("seap_model.cli")
SINGLE_CLIP = ("prompt", "reference", "out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seap", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--version", action="version", version=f"seap {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    for spec in STAGES:
        p = sub.add_parser(spec.name, help=spec.help)
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        if spec.name == "generate":
            g = p.add_argument_group("one clip (instead of the stage)")
            g.add_argument("--prompt")
            g.add_argument("--reference", help="audio file of the sound event (any rate, mono or stereo)")
            g.add_argument("--out", help="output WAV path")
            which = g.add_mutually_exclusive_group()
            which.add_argument("--pipeline", default="models/pipeline", help="saved SEAPPipeline folder")
            which.add_argument(
                "--fast", action="store_true", help="the distilled 1-4 step pipeline (distill.out_dir of --params)"
            )
            add_model_flags(p.add_argument_group("sampling (one clip)"), SamplingParams)
    p = sub.add_parser("params", help="print (or write) the full, validated params with a profile's overrides")
    p.add_argument("--params", default="params.yaml", help="base params file (default: params.yaml)")
    p.add_argument("--overrides", help="YAML of overrides, e.g. configs/ci.yaml")
    p.add_argument("--out", help="write here instead of printing")
    w = sub.add_parser("serve", help="a web page (Gradio) over a saved pipeline: prompt and reference in, audio out")
    w.add_argument("--pipeline", default="models/pipeline", help="saved SEAPPipeline folder")
    w.add_argument(
        "--fast-pipeline",
        default="models/pipeline_fast",
        help="distilled pipeline offered in the sampler menu when this folder holds one",
    )
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    w.add_argument("--port", type=int, default=7860)
    d = sub.add_parser("dag", help="print the stages (modules, params, deps, outs); write or check dvc.yaml")
    d.add_argument("--params", help="show paths resolved from this params file")
    action = d.add_mutually_exclusive_group()
    action.add_argument("--write", metavar="DVC_YAML", nargs="?", const="dvc.yaml", help="write dvc.yaml")
    action.add_argument("--check", metavar="DVC_YAML", nargs="?", const="dvc.yaml", help="exit 1 if it differs")
    return parser


def _generate_one(args: argparse.Namespace) -> None:
    sampling = model_from_flags(args, SamplingParams)  # a refused flag first: it is wrong whatever else is given
    missing = [f"--{name}" for name in SINGLE_CLIP if getattr(args, name) is None]
    if missing:
        raise ValueError(f"one clip needs --prompt, --reference and --out (missing {', '.join(missing)})")
    if not args.prompt.strip():
        raise ValueError("prompt is empty")
    if args.fast:
        args.pipeline = load_params(args.params).distill.out_dir
    check_pipeline_dir(args.pipeline)
    from seap_model.generation import generate_one, load_reference
    from seap_model.pipeline import SEAPPipeline

    load_reference(args.reference, 16000)  # fail fast on a bad reference, before loading the models
    pipe = SEAPPipeline.from_pretrained(args.pipeline)
    print(generate_one(pipe, args.prompt, args.reference, args.out, sampling))


def check_pipeline_dir(folder: str) -> None:
    """A clear error unless ``folder`` holds a saved pipeline: a folder a stage declared but did not train says
    why (``not_trained.json``)."""
    import json
    from pathlib import Path

    if (Path(folder) / "model_index.json").is_file():
        return
    marker = Path(folder) / NOT_TRAINED
    if marker.is_file():
        raise SeapError(f"{folder}: no pipeline was trained here: {json.loads(marker.read_text())['why']}")
    raise FileNotFoundError(f"{folder}: no saved pipeline (run `dvc repro` or pass --pipeline)")


def _serve(args: argparse.Namespace) -> None:
    check_pipeline_dir(args.pipeline)
    try:
        from seap_model.serve import serve
    except ImportError as exc:  # gradio is only needed here
        raise SeapError(f"the web page needs gradio ({exc}): pip install gradio==6.31.0") from None
    serve(args.pipeline, args.host, args.port, fast=args.fast_pipeline)


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


def _dag(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seap_model import dag

    if args.write:
        Path(args.write).write_text(dag.render_dvc_yaml())
        print(f"wrote {args.write}")
        return 0
    if args.check:
        problems = dag.check_dvc_yaml(args.check)
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    print(dag.describe(load_params(args.params) if args.params else None))
    return 0


def _use_available_cores() -> None:
    """torch's intra-op threads = the cores this process may run on (torch counts the machine's, which in a
    container or under taskset can be more); OMP_NUM_THREADS, when set, wins."""
    import os

    if "OMP_NUM_THREADS" not in os.environ and hasattr(os, "sched_getaffinity"):
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keep_credentials_out_of_logs()  # -v is seap's debug logging, not the S3 client's wire log
    one_clip = args.command == "generate" and (
        any(getattr(args, n) is not None for n in SINGLE_CLIP)
        or any(hasattr(args, n) for n in SamplingParams.model_fields)
    )
    try:
        if args.command not in ("params", "dag"):
            quiet_library_bars()
            _use_available_cores()
        if one_clip:
            _generate_one(args)
            return 0
        if args.command == "serve":
            _serve(args)
            return 0
        if args.command == "params":
            _params(args)
            return 0
        if args.command == "dag":
            return _dag(args)
        params = load_params(args.params)
        result = run(args.command, params, stage_fingerprint(args.command, params))
        log.info("%s done: %s", args.command, json.dumps(result, default=str)[:500])
        return 0
    except (SeapError, FileNotFoundError) as exc:
        print(f"seap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        if not one_clip:  # inside a stage a ValueError may be a bug: keep its traceback
            raise
        print(f"seap generate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
