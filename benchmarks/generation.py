"""Benchmark: how fast the trained embedded default generates, and what each speed lever costs in quality.

    python benchmarks/generation.py [--pipeline models/pipeline] [--items 48] [--out results/generation.json]

One run, every ratio against a baseline measured in the same run (the clips of the embedded default, its own length,
on this machine's cores):

* quality vs steps: U-Net calls and wall time per clip for DDPM-200 (Tango's default; sampling seed 0, it costs
  as much as the rest) against DPM-Solver++ 2M and UniPC at 5-25 steps (``--seeds``, mean and std over them),
  each scored like the evaluate stage's transfer protocol (YAMNet FD and KID against the real targets, style
  similarity to the given reference, label hit) on the test split's first ``--items`` items. The fewest U-Net
  calls whose mean FD and KID are within 5% of DDPM-200's (or better) is the ``chosen`` setting;
* Griffin-Lim iterations: codec + vocoder time, and the scores of real clips through them (the ceiling a
  vocoder setting leaves); the fewest iterations within 5% of the default's FD and KID join the ``fast``
  setting (chosen steps + bf16 + those iterations), which is scored again over the seeds;
* levers at batch 8: batched vs one U-Net call per guidance branch, bf16 autocast, channels-last, the chosen
  step count, the fast setting, ``torch.compile`` (``--compile``);
* real-time factor (seconds of compute per second of audio) at batch 1 and batch 8: the baseline, the
  default (``SamplingParams``) and the fast setting;
* peak memory (resident set, each measured in a fresh process so one does not hide another);
* where the time goes at the default: U-Net, sampler step, codec decode, vocoder, text and reference
  encoders, adapter.

Writes the JSON (every figure, with item counts) and prints the tables. ``--items 8 --quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from seap_model.audio import LogMel
from seap_model.config import EvaluateParams, SamplingParams, load_params
from seap_model.eval.backends import load_backends
from seap_model.eval.feature_cache import FeatureCache
from seap_model.eval.protocols import build_items
from seap_model.eval.render import References, real_clip, through_codec
from seap_model.eval.scoring import distribution_metrics, featurise, per_item
from seap_model.generation import item_generator
from seap_model.pipeline import SEAPPipeline
from seap_model.samplers import sampler_swapped

# The baseline every lever is measured against: DPM-Solver++ 2M, 25 steps, fp32 (the default before this
# benchmark chose one; the default now is SamplingParams().steps).
BASELINE = ("dpmpp-2m", 25)
ANCHOR = ("ddpm", 200)  # Tango's sampler; on seed 0 only (it costs as much as all the others together)
SETTINGS = [*(("dpmpp-2m", n) for n in (5, 8, 10, 15, 25)), *(("unipc", n) for n in (8, 10, 15, 25))]
QUICK_ANCHOR, QUICK = ("ddpm", 20), [("dpmpp-2m", 5), ("unipc", 5)]
SCORES = ("fd", "kid", "style", "hit")
WITHIN = 0.05  # FD and KID within 5% of DDPM-200


@dataclass(frozen=True)
class Run:
    scheduler: str = BASELINE[0]
    steps: int = BASELINE[1]
    precision: str = "fp32"
    batch_guidance: bool = True
    seed: int = 0
    griffin_lim_iters: int | None = None  # None: the vocoder's own


class Profile:
    """Seconds spent in each part of the pipeline and U-Net calls, by wrapping the parts' methods. A profiler
    (torch.profiler) would list kernels, not which of our components they belong to; this asks only that."""

    PARTS = {  # name -> (pipeline attribute, the methods timed as it); none of them calls another
        "U-Net": ("unet", "forward"),
        "codec decode": ("codec", "decode"),
        "vocoder": ("vocoder", "forward"),
        "text encoder": ("text_encoder", "forward"),
        "reference encoder": ("reference_encoder", "forward", "frames"),
        "adapter": ("adapter", "forward"),
        "reference attention tokens": ("reference_attention", "tokens"),
    }

    def __init__(self):
        self.seconds = {name: 0.0 for name in [*self.PARTS, "sampler step"]}
        self.unet_calls = self.unet_rows = 0

    @contextmanager
    def attached(self, pipe: SEAPPipeline):
        targets = [
            (getattr(pipe, attr, None), method, name)
            for name, (attr, *methods) in self.PARTS.items()
            for method in methods
        ]
        targets.append((pipe.scheduler, "step", "sampler step"))
        patched = []
        for part, method, name in targets:
            if part is not None:
                # An instance attribute (torch.compile's wrapper sets its own forward) is put back as it was.
                patched.append((part, method, part.__dict__.get(method)))
                setattr(part, method, self._timed(name, getattr(part, method)))
        try:
            yield self
        finally:
            for part, method, own in patched:
                if own is None:
                    delattr(part, method)  # back to the class's method
                else:
                    setattr(part, method, own)

    def _timed(self, name, fn):
        def wrapper(*args, **kwargs):
            if name == "U-Net":
                self.unet_calls += 1
                self.unet_rows += args[0].shape[0]
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return wrapper


def generate(pipe, items, refs, run: Run, batch: int, seconds: float, profile: Profile | None = None):
    """Clips for ``items`` (transfer references), ``batch`` at a time; (clips, wall seconds, U-Net calls)."""
    profile = profile or Profile()
    clips, start = [], time.perf_counter()
    with sampler_swapped(pipe, run.scheduler), profile.attached(pipe):
        for first in range(0, len(items), batch):
            part = items[first : first + batch]
            out = pipe(
                [i.prompt for i in part],
                [refs(i.transfer.path) for i in part],
                duration=seconds,
                num_inference_steps=run.steps,
                generator=[item_generator(run.seed, i.id) for i in part],
                progress=False,
                precision=run.precision,
                batch_guidance=run.batch_guidance,
                vocoder_iterations=run.griffin_lim_iters,
            )
            clips += list(out.audios)
    return clips, time.perf_counter() - start, profile.unet_calls


class Scorer:
    """The evaluate stage's transfer scores for a list of clips in item order."""

    def __init__(self, items, refs, sr: int, seconds: float, cache_dir: Path):
        self.backends, self.cache, self.sr = load_backends(EvaluateParams()), FeatureCache(cache_dir), sr
        self.labels = [i.label for i in items]
        self.real = self.feats([real_clip(i.scene_audio, i.start, sr, seconds) for i in items])
        self.given = np.stack(
            [self.cache.features(self.backends.style, refs(i.transfer.path).numpy(), sr) for i in items]
        )

    def feats(self, waves):
        return featurise(self.backends, self.cache, waves, self.sr)

    def __call__(self, clips) -> dict:
        gen = self.feats(clips)
        dist = distribution_metrics(gen, self.real)
        paired = per_item(self.backends, gen, self.real, self.given, self.labels)
        return {
            "fd": dist["fd_yamnet"],
            "kid": dist["kid_yamnet"],
            "style": float(paired["style"].mean()),
            "hit": float(paired["hit"].mean()),
        }


def quality_vs_steps(pipe, items, refs, scorer, seconds, batch, runs: list[Run]) -> list[dict]:
    """One row per run: U-Net calls and rows per clip, seconds per clip, the transfer scores."""
    rows = []
    for run in runs:
        profile = Profile()
        clips, wall, calls = generate(pipe, items, refs, run, batch, seconds, profile)
        batches = -(-len(items) // batch)
        row = {"sampler": run.scheduler, "steps": run.steps, "seed": run.seed, "unet_calls_per_clip": calls / batches}
        row["unet_rows_per_clip"] = profile.unet_rows / len(items)  # U-Net evaluations: calls x guidance branches
        row.update(seconds_per_clip=wall / len(items), **scorer(clips))
        rows.append(row)
        print("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (sampler, steps): mean and std over its seeds of every score, and how many seeds."""
    out = []
    for key in dict.fromkeys((r["sampler"], r["steps"]) for r in rows):
        mine = [r for r in rows if (r["sampler"], r["steps"]) == key]
        row = {
            "sampler": key[0],
            "steps": key[1],
            "seeds": len(mine),
            "unet_calls_per_clip": mine[0]["unet_calls_per_clip"],
        }
        row["seconds_per_clip"] = float(np.mean([r["seconds_per_clip"] for r in mine]))
        for name in SCORES:
            values = np.array([r[name] for r in mine])
            row[name], row[f"{name}_std"] = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else None
        out.append(row)
    return out


def choose(summary: list[dict], anchor: tuple[str, int]) -> dict:
    """The fewest U-Net calls whose mean FD and KID over seeds are within ``WITHIN`` of the anchor's (or better)."""
    base = next(r for r in summary if (r["sampler"], r["steps"]) == anchor)
    ok = [
        r
        for r in summary
        if r is not base and r["fd"] <= base["fd"] * (1 + WITHIN) and r["kid"] <= base["kid"] * (1 + WITHIN)
    ]
    best = min(ok, key=lambda r: (r["unet_calls_per_clip"], r["fd"])) if ok else None
    return {
        "anchor": base,
        "chosen": best,
        "call_ratio": base["unet_calls_per_clip"] / best["unet_calls_per_clip"] if best else None,
    }


def rtf(pipe, items, refs, run: Run, batch: int, seconds: float, clips: int) -> float:
    """Seconds of compute per second of audio over ``clips`` clips (after one warm-up batch)."""
    generate(pipe, items[:batch], refs, run, batch, seconds)
    part = (items * (clips // len(items) + 1))[:clips]
    _, wall, _ = generate(pipe, part, refs, run, batch, seconds)
    return wall / (clips * seconds)


def levers(pipe, items, refs, seconds, chosen: Run, fast: Run, clips: int, compile_unet: bool) -> list[dict]:
    base = rtf(pipe, items, refs, Run(), 8, seconds, clips)
    rows = [{"lever": "none (DPM++ 25, fp32, batched guidance)", "rtf_batch8": base, "speedup": 1.0}]

    def add(name, value):
        rows.append({"lever": name, "rtf_batch8": value, "speedup": base / value if value else None})
        print(f"  {name}: RTF {value:.3f} (x{base / value:.2f})", flush=True)

    add(
        "guidance unbatched (one U-Net call per branch)",
        rtf(pipe, items, refs, Run(batch_guidance=False), 8, seconds, clips),
    )
    add("bf16 autocast", rtf(pipe, items, refs, Run(precision="bf16"), 8, seconds, clips))
    pipe.unet.to(memory_format=torch.channels_last)
    add("channels-last", rtf(pipe, items, refs, Run(), 8, seconds, clips))
    pipe.unet.to(memory_format=torch.contiguous_format)
    add(f"{chosen.scheduler} {chosen.steps} steps", rtf(pipe, items, refs, chosen, 8, seconds, clips))
    add(
        f"{chosen.scheduler} {chosen.steps} steps + bf16",
        rtf(pipe, items, refs, replace(chosen, precision="bf16"), 8, seconds, clips),
    )
    if fast.griffin_lim_iters is not None:
        add(
            f"... + Griffin-Lim {fast.griffin_lim_iters} iterations (fast)",
            rtf(pipe, items, refs, fast, 8, seconds, clips),
        )
    if compile_unet:
        eager = pipe.unet
        try:
            pipe.unet = torch.compile(eager)
            add("torch.compile", rtf(pipe, items, refs, Run(), 8, seconds, clips))
        except Exception as exc:  # a compiler missing or failing is a measured outcome, not a crash
            rows.append({"lever": "torch.compile", "error": f"{type(exc).__name__}: {exc}"[:300]})
        finally:
            pipe.unet = eager
    return rows


def griffin_lim(pipe, items, sr, seconds, scorer) -> list[dict]:
    """Codec + vocoder seconds per clip and the scores of real clips through them, by Griffin-Lim iterations:
    the ceiling each vocoder setting leaves the generator."""
    if getattr(pipe.vocoder, "griffin_lim", None) is None:  # a HiFi-GAN vocoder has no iterations
        return []
    waves, logmel, rows = [real_clip(i.scene_audio, i.start, sr, seconds) for i in items], LogMel(pipe.mel_settings), []
    for n in (32, 16, 8):
        with pipe.griffin_lim_iterations(n):
            start = time.perf_counter()
            clips = through_codec(pipe, waves, logmel, 8)
            wall = time.perf_counter() - start
        rows.append({"griffin_lim_iters": n, "codec_vocoder_seconds_per_clip": wall / len(waves), **scorer(clips)})
    return rows


def fewest_iterations(rows: list[dict]) -> int | None:
    """The fewest Griffin-Lim iterations whose real-through-vocoder FD and KID are within ``WITHIN`` of the
    vocoder's default (the first row) or better; None without Griffin-Lim."""
    if not rows:
        return None
    base = rows[0]
    ok = [r for r in rows if r["fd"] <= base["fd"] * (1 + WITHIN) and r["kid"] <= base["kid"] * (1 + WITHIN)]
    return min(r["griffin_lim_iters"] for r in ok)


def _rss_mib() -> float:
    """This process's resident set now (Linux /proc; the benchmark's only platform need)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmRSS in /proc/self/status")


def _peak_child(pipeline: str, batch: int, steps: int, seconds: float, queue) -> None:
    import threading

    pipe = SEAPPipeline.from_pretrained(pipeline)
    loaded = peak = _rss_mib()
    done = threading.Event()

    def poll():  # the resident set sampled every 5 ms while generating
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, _rss_mib())

    watcher = threading.Thread(target=poll)
    watcher.start()
    wave = torch.randn(int(2 * pipe.sample_rate)) * 0.1
    pipe(["a dog barking"] * batch, [wave] * batch, duration=seconds, num_inference_steps=steps, progress=False)
    done.set()
    watcher.join()
    queue.put((loaded, max(peak, _rss_mib())))


def peak_memory(pipeline: str, seconds: float) -> dict:
    """Resident set (MiB) with the pipeline loaded, and its peak during one generation (5 steps), batch 1 and 8,
    each in a new process so one measurement cannot hide another."""
    ctx, out = mp.get_context("spawn"), {}
    for batch in (1, 8):
        queue = ctx.Queue()
        child = ctx.Process(target=_peak_child, args=(pipeline, batch, 5, seconds, queue))
        child.start()
        loaded, peak = queue.get(timeout=600)
        child.join()
        out[f"batch{batch}"] = {"loaded_mib": loaded, "peak_mib": peak, "generation_mib": peak - loaded}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default="models/pipeline")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--items", type=int, default=48, help="test items the quality figures rest on")
    ap.add_argument("--rtf-clips", type=int, default=16, help="clips each real-time factor is measured over")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes of compiling)")
    ap.add_argument("--quick", action="store_true", help="smoke run: DDPM-20 as the anchor, 5-step samplers")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds of every setting")
    ap.add_argument("--out", default="results/generation.json")
    args = ap.parse_args()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    params = load_params(args.params)
    sr, seconds = params.audio.sample_rate, params.finetune.train_seconds
    pipe = SEAPPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    items = build_items(params.data.serst_dir, args.items)
    refs = References(sr)
    report = {"items": len(items), "clip_seconds": seconds, "threads": torch.get_num_threads(), "batch": 8}
    anchor, settings = (QUICK_ANCHOR, QUICK) if args.quick else (ANCHOR, SETTINGS)
    runs = [Run(*anchor), *(Run(*setting, seed=seed) for seed in args.seeds for setting in settings)]
    with tempfile.TemporaryDirectory() as tmp:
        scorer = Scorer(items, refs, sr, seconds, Path(tmp))
        print(f"quality vs steps ({len(items)} transfer items, batch 8, seeds {args.seeds}):", flush=True)
        report["quality_vs_steps"] = quality_vs_steps(pipe, items, refs, scorer, seconds, 8, runs)
        report["quality_summary"] = summarise(report["quality_vs_steps"])
        pick = choose(report["quality_summary"], anchor)
        report["selection"] = pick
        chosen = Run(pick["chosen"]["sampler"], pick["chosen"]["steps"]) if pick["chosen"] else Run()
        report["griffin_lim"] = griffin_lim(pipe, items, sr, seconds, scorer)
        fast = Run(chosen.scheduler, chosen.steps, "bf16", griffin_lim_iters=fewest_iterations(report["griffin_lim"]))
        report["fast"] = fast.__dict__
        report["fast_quality"] = quality_vs_steps(
            pipe, items, refs, scorer, seconds, 8, [replace(fast, seed=seed) for seed in args.seeds]
        )
    print("levers (batch 8):", flush=True)
    report["levers"] = levers(pipe, items, refs, seconds, chosen, fast, args.rtf_clips, args.compile)
    report["rtf"] = {
        f"{name} batch {b}": rtf(pipe, items, refs, run, b, seconds, args.rtf_clips if b == 8 else 4)
        for name, run in (
            ("DPM++ 25 (baseline)", Run()),
            ("default", Run(steps=SamplingParams().steps)),
            ("fast", fast),
        )
        for b in (1, 8)
    }
    profile = Profile()
    _, wall, _ = generate(pipe, items[:8], refs, Run(steps=SamplingParams().steps), 8, seconds, profile)
    parts = {**profile.seconds, "other (tokenizer, noise, guidance sums)": wall - sum(profile.seconds.values())}
    report["profile"] = {k: {"seconds": v, "share": v / wall} for k, v in parts.items()}
    report["peak_memory"] = peak_memory(args.pipeline, seconds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print_tables(report)
    print(f"wrote {args.out}")


def markdown(rows: list[dict]) -> str:
    """A markdown table of dicts (columns: the first row's keys; floats to 4 significant digits)."""
    cols = list(rows[0])

    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows])


def print_tables(r: dict) -> None:
    print(f"\n{r['items']} items, {r['clip_seconds']} s clips, {r['threads']} threads\n")
    print(markdown(r["quality_vs_steps"]))
    print("\nmean (and std) over seeds:\n" + markdown(r["quality_summary"]))
    sel = r["selection"]
    if sel["chosen"]:
        c, ratio = sel["chosen"], sel["call_ratio"]
        print(f"\nchosen: {c['sampler']} {c['steps']} steps, {ratio:.1f}x fewer U-Net calls than DDPM-200")
    else:
        print("\nno sampler setting reached DDPM-200's FD and KID within 5%")
    print(f"\nfast setting {r['fast']}:\n" + markdown(r["fast_quality"]))
    print("\n" + markdown(r["levers"]))
    if r["griffin_lim"]:
        print("\n" + markdown(r["griffin_lim"]))
    print("\n" + markdown([{"setting": k, "real-time factor": v} for k, v in r["rtf"].items()]))
    print("\n" + markdown([{"part": k, **v} for k, v in r["profile"].items()]))
    print("\n" + markdown([{"batch": k, **v} for k, v in r["peak_memory"].items()]))


if __name__ == "__main__":
    main()
