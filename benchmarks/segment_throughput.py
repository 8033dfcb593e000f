"""Segmentation throughput and memory: ``python benchmarks/segment_throughput.py [--clips 200 --workers 2]``.

Builds a synthetic strongly-labelled collection like WavCaps' AudioSet_SL (10 s, 32 kHz mono FLAC, 2-5 events
per clip from 10 labels), then runs the segment stage on it at 1x and 4x its size, each in a fresh process.
Prints seconds of audio segmented per wall-clock second (decode, resample to 16 kHz, cut references, write
WAVs and manifests; worker start-up included) and the peak RSS of the main process and of the largest worker.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SECONDS, RATE = 10.0, 32000
LABELS = ["dog", "bell", "car", "speech", "rain", "bird", "siren", "door", "water", "music"]


def make_collection(root: Path, clips: int, seed: int = 0) -> None:
    """``clips`` FLAC files under ``root/audio`` and one manifest per scale (``clips_1x.jsonl``, ...)."""
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    t = np.arange(round(SECONDS * RATE)) / RATE
    for k in range(clips):
        wave = 0.05 * rng.standard_normal(len(t))
        events = []
        for _ in range(rng.integers(2, 6)):
            onset = float(rng.uniform(0, SECONDS - 0.5))
            offset = float(min(SECONDS, onset + rng.uniform(0.3, 4.0)))
            a, b = round(onset * RATE), round(offset * RATE)
            wave[a:b] += 0.3 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t[a:b])
            events.append(
                {"label": LABELS[rng.integers(len(LABELS))], "onset": round(onset, 3), "offset": round(offset, 3)}
            )
        key = f"audio/clip_{k:05d}.flac"
        sf.write(root / key, (wave / np.abs(wave).max() * 0.9).astype(np.float32), RATE)
        rows.append(json.dumps({"clip": key, "caption": "", "events": events}) + "\n")
    for scale in (1, 4):
        (root / f"clips_{scale}x.jsonl").write_text("".join(rows[: clips * scale // 4]))


def run_scale(root: Path, scale: int, workers: int) -> dict:
    """Segment the ``scale``x manifest in this process; returns throughput and peak memory."""
    from seap_model.config import parse_params
    from seap_model.fingerprint import stage_fingerprint
    from seap_model.stages.segment import segment

    out = root / f"out_{scale}x"
    params = parse_params(
        {
            "data": {
                "raw_dir": str(root),
                "serst_dir": str(out / "serst"),
                "report_dir": str(out / "report"),
                "workers": workers,
                "source": {"type": "local", "root": str(root), "manifest": f"clips_{scale}x.jsonl"},
            }
        }
    )
    fingerprint = stage_fingerprint("segment", params)  # what `seap segment` passes it (not timed)
    start = time.perf_counter()
    report = segment(params, fingerprint)
    wall = time.perf_counter() - start
    return {
        "scale": scale,
        "clips": report["kept"]["clips"],
        "audio_seconds": report["seconds_read"],
        "wall_seconds": round(wall, 2),
        "realtime_factor": round(report["seconds_read"] / wall, 1),
        "references": report["references"]["kept"],
        "peak_rss_main_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200, help="clips at 1x (default 200: 2000 s of audio)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--run-scale", type=int, help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_scale:
        print(json.dumps(run_scale(args.root, args.run_scale, args.workers)))
        return
    with tempfile.TemporaryDirectory(prefix="seap_bench_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_collection(root, 4 * args.clips)
        print(f"made {4 * args.clips} clips of {SECONDS:.0f} s in {time.perf_counter() - start:.1f} s", flush=True)
        results = []
        for scale in (1, 4):
            cmd = [
                sys.executable,
                __file__,
                "--run-scale",
                str(scale),
                "--root",
                str(root),
                "--workers",
                str(args.workers),
            ]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    header = ("corpus", "clips", "audio s", "wall s", "x real time", "RSS main MB", "RSS worker MB")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 6, 8, 7, 11, 11, 13))))
    for r in results:
        print(
            f"{r['scale']:>5}x {r['clips']:>6} {r['audio_seconds']:>8.0f} {r['wall_seconds']:>7.1f} "
            f"{r['realtime_factor']:>11.1f} {r['peak_rss_main_mb']:>11} {r['peak_rss_worker_mb']:>13}"
        )
    print(f"workers: {args.workers}; target: >= 200x real time, peak RSS flat from 1x to 4x")


if __name__ == "__main__":
    main()
