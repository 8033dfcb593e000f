"""Benchmark: the trained teacher at the previous default, at the fast default's candidates, and the distilled
pipeline at 1, 2 and 4 steps, in one run on the same items and sampling seeds.

    python benchmarks/systems.py [--params params.yaml] [--items 96] [--seeds 0 1 2] [--out results/systems.json]

Quality is the evaluate stage's transfer protocol, through its own code (``seap_model.eval.run.Evaluation``):
FAD-infinity and KID on YAMNet embeddings against the real targets, style similarity to the given reference,
the follow difference with its 95% interval over items, and label hit; mean and std over the sampling seeds.
Speed is the real-time factor (seconds of compute per second of audio, after a warm-up batch) at batch 1 and 8
on this machine's cores, and where the time goes at batch 8 (``benchmarks/generation.py``'s ``Profile``).
A system whose pipeline folder holds no trained pipeline (``distill.enabled`` off) is reported as missing.

Every ratio is against the previous default (10 steps, fp32) measured in the same run. ``--items 8 --seeds 0
--rtf-clips 8`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from generation import Profile

from seap_model.config import load_params
from seap_model.eval.render import render
from seap_model.eval.run import Evaluation
from seap_model.eval.scoring import distribution_metrics
from seap_model.generation import resolved
from seap_model.pipeline import SEAPPipeline

PREVIOUS = "teacher, previous default (10 steps, fp32)"
# name -> (which pipeline, steps (None: its own default), precision)
SYSTEMS = {
    PREVIOUS: ("teacher", 10, "fp32"),
    "teacher, 10 steps, auto precision": ("teacher", 10, "auto"),
    "teacher, 5 steps, auto precision": ("teacher", 5, "auto"),
    "teacher, 8 steps, auto precision": ("teacher", 8, "auto"),
    "distilled, 1 step": ("distilled", 1, "auto"),
    "distilled, 2 steps": ("distilled", 2, "auto"),
    "distilled, 4 steps": ("distilled", 4, "auto"),
}
SCORES = ("fad_inf_yamnet", "kid_yamnet", "style", "follow", "hit")


def real_time_factor(run: Evaluation, pipe, sampling, batch: int, clips: int) -> tuple[float, dict]:
    """Seconds of compute per second of audio over ``clips`` clips at ``batch`` (one warm-up batch first), and
    each part's share of the timed wall clock (the rest: tokenizer, noise, guidance sums, batching)."""
    ids, prompts, refs = run.ids[:clips], run.prompts[:clips], run.given["transfer"][:clips]
    render(pipe, ids[:batch], prompts[:batch], refs[:batch], 0, sampling, batch, "warm-up")
    profile = Profile()
    with profile.attached(pipe):
        start = time.perf_counter()
        render(pipe, ids, prompts, refs, 0, sampling, batch, f"rtf batch {batch}")
        wall = time.perf_counter() - start
    shares = {k: v / wall for k, v in profile.seconds.items()}
    shares["other"] = 1 - sum(shares.values())
    return wall / (len(ids) * sampling.duration), {"shares": shares, "unet_rows_per_clip": profile.unet_rows / len(ids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--items", type=int, default=96, help="test items the quality figures rest on")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds")
    ap.add_argument("--rtf-clips", type=int, default=16, help="clips each real-time factor is measured over")
    ap.add_argument("--out", default="results/systems.json")
    args = ap.parse_args()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    params = load_params(args.params)
    ev = params.evaluate.model_copy(
        update={"max_items": args.items, "seeds": tuple(args.seeds), "protocols": ("transfer",), "clap": None}
    )
    params = params.model_copy(update={"evaluate": ev})
    run = Evaluation(params)  # items, evaluators, the real targets and the teacher, loaded and featurised once
    folders = {"teacher": params.finetune.out_dir, "distilled": params.distill.out_dir}
    pipes = {"teacher": run.seap}
    if (Path(folders["distilled"]) / "model_index.json").is_file():
        pipes["distilled"] = SEAPPipeline.from_pretrained(folders["distilled"])
    report: dict = {
        "items": len(run.ids),
        "seeds": list(args.seeds),
        "clip_seconds": run.sampling.duration,
        "threads": torch.get_num_threads(),
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "pipelines": folders,
        "systems": {},
    }
    for name, (which, steps, precision) in SYSTEMS.items():
        if which not in pipes:
            report["systems"][name] = {"missing": f"{folders[which]} holds no trained pipeline"}
            print(f"{name}: missing ({folders[which]})", flush=True)
            continue
        pipe = pipes[which]
        sampling = resolved(pipe, run.sampling.model_copy(update={"steps": steps, "precision": precision}))
        for seed in args.seeds:
            waves = render(pipe, run.ids, run.prompts, run.given["transfer"], seed, sampling, 8, f"{name} {seed}")
            clips = run.feats(waves)
            run.tables.add_seed(
                "transfer", name, seed, run.score(clips, "transfer"), distribution_metrics(clips, run.real)
            )
        row = {"steps": sampling.steps, "precision": sampling.precision}
        for batch in (1, 8):
            rtf, profile = real_time_factor(run, pipe, sampling, batch, args.rtf_clips if batch == 8 else 4)
            row[f"rtf_batch{batch}"] = rtf
            if batch == 8:
                row["profile_share"], row["unet_rows_per_clip"] = profile["shares"], profile["unet_rows_per_clip"]
        report["systems"][name] = row
        print(f"{name}: {row}", flush=True)
    quality = run.tables.metrics()["transfer"]
    for name, row in report["systems"].items():
        if name in quality:
            row.update({k: v for k, v in quality[name].items() if k.split("_std")[0].split("_ci95")[0] in SCORES})
    base = report["systems"][PREVIOUS]
    for row in report["systems"].values():
        if "rtf_batch8" in row:
            row["speedup_batch8"] = base["rtf_batch8"] / row["rtf_batch8"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
