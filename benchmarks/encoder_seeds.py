"""Reference-encoder benchmark: the pretrain-encoder stage's training + evaluation for N seeds.

Run it in a directory holding the SERST data (``data/serst``); when that is missing it first runs the
``download`` and ``segment`` stages there (about 15 s; the corpus is read from ``data.corpus``):

    cd /tmp/enc && cp -r /path/to/seap/data . && cp /path/to/seap/params.yaml .
    python /path/to/seap/benchmarks/encoder_seeds.py --seeds 3
    python /path/to/seap/benchmarks/encoder_seeds.py --seeds 3 --set encoder.type=yamnet

Prints, per seed and as mean ± std (sample std over seeds), the held-out linear-probe accuracy and
the same-source EER of the trained encoder and of the untrained H/ASP encoder of the same shape, and the
stage's wall time. Models and reports of each seed go to a temporary folder (``--keep DIR`` keeps them).
``--set key=value`` (repeatable, dotted keys, YAML values) overrides params.yaml; ``--jobs 2`` runs
seeds in parallel processes with ``--threads`` torch threads each (default: all cores, one job).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from seap_model.config import Params, load_params, parse_params

KEYS = ("accuracy", "untrained_accuracy", "eer", "untrained_eer", "seconds", "stage_seconds")


def with_overrides(params: Params, sets: list[str], **top: object) -> Params:
    data = params.model_dump(mode="json")
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        node, *path = key.split(".")
        target = data
        for part in [node, *path][:-1]:
            target = target.setdefault(part, {})
        target[[node, *path][-1]] = yaml.safe_load(value)
    for key, value in top.items():
        section, _, name = key.partition("__")
        if name:
            data[section][name] = value
        else:
            data[section] = value
    return parse_params(data, "benchmark overrides")


def ensure_data(params: Params) -> None:
    serst = Path(params.data.serst_dir)
    if all((serst / f"{split}.jsonl").is_file() for split in ("train", "val", "test")):
        return
    from seap_model.fingerprint import stage_fingerprint
    from seap_model.stages import run

    print(f"{serst}: no SERST splits here, running the download and segment stages", file=sys.stderr)
    for stage in ("download", "segment"):
        run(stage, params, stage_fingerprint(stage, params))


def run_seed(args: tuple[Params, int, bool]) -> dict:
    params, threads, calibrated = args
    torch.set_num_threads(threads)
    from seap_model.fingerprint import stage_fingerprint
    from seap_model.stages import run

    row = {"seed": params.seed, **run("pretrain-encoder", params, stage_fingerprint("pretrain-encoder", params))}
    if calibrated:
        row.update(calibrated_baseline(params))
    return row


def calibrated_baseline(params: Params) -> dict:
    """The untrained H/ASP encoder with its BatchNorm statistics re-estimated on the train references."""
    from seap_model.data.manifest import read_labels
    from seap_model.eval.encoder import calibrate_batchnorm, evaluate
    from seap_model.training.encoder import build_encoder
    from seap_model.training.pairs import load_references

    serst, cpu = Path(params.data.serst_dir), torch.device("cpu")
    labels = list(read_labels(serst))
    train = load_references(serst, ("train",), labels, params)
    held = load_references(serst, ("val", "test"), labels, params)
    torch.manual_seed(params.seed)
    encoder = calibrate_batchnorm(build_encoder(params), train.waves, cpu)
    return {f"calibrated_untrained_{k}": v for k, v in evaluate(encoder, train, held, len(labels), cpu).items()}


def summary(rows: list[dict]) -> dict[str, tuple[float, float]]:
    out = {}
    for key in KEYS:
        values = [float(r[key]) for r in rows]
        out[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per job (default: cores / jobs)")
    parser.add_argument("--keep", metavar="DIR", help="keep each seed's model and report under DIR/seed<N>")
    parser.add_argument("--json", metavar="FILE", help="also write the per-seed metrics and summary as JSON")
    parser.add_argument(
        "--calibrated-baseline",
        action="store_true",
        help="also score the untrained encoder with BatchNorm statistics re-estimated on the train references",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    base = with_overrides(load_params(args.params), args.set)
    ensure_data(base)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="encoder_seeds_"))
    threads = args.threads or max(1, torch.get_num_threads() // max(args.jobs, 1))
    jobs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        run = root / f"seed{seed}"
        params = with_overrides(
            base, [], seed=seed, encoder__out_dir=str(run / "model"), encoder__report_dir=str(run / "report")
        )
        jobs.append((params, threads, args.calibrated_baseline))
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            rows = pool.map(run_seed, jobs)
    else:
        rows = [run_seed(job) for job in jobs]

    enc = base.encoder
    shape = f"channels {list(enc.channels)}, layers {list(enc.layers)}, dim {enc.embedding_dim}, steps {enc.steps}"
    print(f"encoder.type {enc.type} ({shape if enc.type == 'hasp' else enc.yamnet_pooling}); overrides {args.set}")
    print(f"{'seed':>6} {'acc':>7} {'acc0':>7} {'eer':>7} {'eer0':>7} {'train_s':>8} {'stage_s':>8}")
    for r in rows:
        values = " ".join(f"{r[k]:7.3f}" for k in KEYS[:4])
        print(f"{r['seed']:>6} {values} {r['seconds']:8.1f} {r['stage_seconds']:8.1f}")
    stats = summary(rows)
    if args.calibrated_baseline:
        for key in ("accuracy", "eer"):
            values = [float(r[f"calibrated_untrained_{key}"]) for r in rows]
            stats[f"calibrated_untrained_{key}"] = (
                statistics.fmean(values),
                statistics.stdev(values) if len(values) > 1 else 0.0,
            )
    print(f"over {len(rows)} seeds (mean ± std):")
    print(
        f"  accuracy  trained {stats['accuracy'][0]:.3f} ± {stats['accuracy'][1]:.3f}"
        f"   untrained {stats['untrained_accuracy'][0]:.3f} ± {stats['untrained_accuracy'][1]:.3f}"
    )
    print(
        f"  EER       trained {stats['eer'][0]:.3f} ± {stats['eer'][1]:.3f}"
        f"   untrained {stats['untrained_eer'][0]:.3f} ± {stats['untrained_eer'][1]:.3f}"
    )
    print(
        f"  wall time training {stats['seconds'][0]:.0f} s, stage {stats['stage_seconds'][0]:.0f} s "
        f"({threads} torch threads x {args.jobs} job(s))"
    )
    if args.calibrated_baseline:
        acc, eer = stats["calibrated_untrained_accuracy"], stats["calibrated_untrained_eer"]
        print(
            f"  untrained with re-estimated BatchNorm statistics: accuracy {acc[0]:.3f} ± {acc[1]:.3f}, "
            f"EER {eer[0]:.3f} ± {eer[1]:.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": rows, "summary": stats, "overrides": args.set}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
