"""Benchmark: items/s of the batch generation flow on the embedded model, three ways in one run.

    python benchmarks/batch_generate.py [--pipeline models/pipeline] [--items 16] [--steps 25]

* sequential: batch size 1, one process (the baseline every ratio is against);
* batched: batch size 8, one process;
* dask: batch size 8 on a local Dask cluster of 2 worker processes (one pipeline each).

Each runs the same job (the test split's first ``--items`` references and captions, local storage) through
``flows.batch_generate.batch_generate`` into a fresh folder, with one torch thread per batch, so that the Dask
run makes the batched run's clips byte for byte (checked). Batch size 1 vs 8 changes how float sums are split,
so those clips may differ in their last bits (reported, not required). Prefect runs against a temporary local
API. Pipeline loading is outside the timing for the in-process runs (loaded once before); Dask workers load
theirs inside it, which is what a user of a fresh cluster pays.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # flows/ lives beside the installed library


def write_job(folder: Path, serst: Path, items: int) -> str:
    """A job of the test split's first ``items`` (caption, reference) pairs; references reached through a link
    to the SERST folder beside the job (a job's references are paths under its own folder)."""
    from seap_model.batch.items import split_items

    (folder / "serst").symlink_to(serst.resolve())
    rows = [
        {"id": it.id, "prompt": it.prompt, "reference": f"serst/{Path(it.reference).relative_to(serst).as_posix()}"}
        for it in split_items(serst, "test", items)
    ]
    (folder / "job.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder / "job.jsonl")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pipeline", default="models/pipeline")
    p.add_argument("--serst", default="data/serst")
    p.add_argument("--items", type=int, default=16)
    p.add_argument("--steps", type=int, default=25)
    a = p.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from flows.batch_generate import Cluster, batch_generate, load_pipeline
    from seap_model.config import SamplingParams

    sampling = SamplingParams(steps=a.steps)
    runs = {"sequential": (1, Cluster()), "batched": (8, Cluster()), "dask": (8, Cluster(dask_workers=2))}
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness():
        root = Path(tmp)
        job = write_job(root, Path(a.serst), a.items)
        load_pipeline(a.pipeline)
        results, clips = {}, {}
        for name, (batch, cluster) in runs.items():
            out = root / name
            start = time.perf_counter()
            summary = batch_generate(job, str(out), a.pipeline, batch, sampling, cluster)
            seconds = time.perf_counter() - start
            if summary["generated"] != a.items:
                raise SystemExit(f"{name}: generated {summary['generated']} of {a.items} ({summary})")
            results[name] = a.items / seconds
            clips[name] = {f.name: f.read_bytes() for f in sorted(out.glob("*.wav"))}
    base = results["sequential"]
    print(f"batch generation, {a.items} items, {a.steps} steps, {a.pipeline}")
    for name, rate in results.items():
        print(f"  {name:10s} {rate:6.2f} items/s  x{rate / base:.2f}")
    same = clips["dask"] == clips["batched"]
    print(f"  dask clips byte-identical to batched: {same}")
    print(f"  batch-1 clips byte-identical to batch-8: {clips['sequential'] == clips['batched']}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
