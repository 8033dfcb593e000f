"""Load: one batch job of many items through the batch flow's command line, in a process of its own, at two sizes.

The CI form runs 50 and 500 items on a tiny random pipeline; the long form (``SEAP_FAULTS=long``) runs 500 and
5,000 items on the pipeline ``SEAP_FAULTS_MODEL`` names (the main job's, e.g. ``models/pipeline``), or the tiny
one when it names none. Each size is a fresh ``python -m flows.batch_generate`` process against the session's
Prefect API; its peak RSS is the child's ``ru_maxrss``, read by a wrapper process that runs nothing else.

What must hold: every row is accounted for exactly once (one output and one sidecar per id, the manifest names
each id once, nothing failed), peak memory does not grow with the number of items (a job is planned and its
outcomes kept as small rows, never as audio), and throughput is steady: the render time per item of the last
tenth of the batches is within noise of the first tenth's.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import make_tiny_pipeline, tone
from tests.faults.ledger import record, rng, size

ROOT = Path(__file__).resolve().parents[2]
SIZES = (size(50, 500), size(500, 5000))
PROMPTS = ("a dog barking", "a bell ringing", "rain on a window", "a car passing by", "birds singing at dawn")
# The peak of the larger job may exceed the smaller's by allocator noise, not by anything per item: 5000 rows of
# job and outcomes are a few MB.
RSS_SLACK_MB = 64
# Steady: the last tenth's render time per item within this factor of the first tenth's (2 busy cores jitter).
STEADY = 1.5
# What is loaded is the job's bookkeeping (planning, outcomes, manifest, memory), not the sampler: short renders
# at 2 steps, on whichever pipeline, keep 5,500 items of the embedded model within minutes on 2 cores.
RENDER = ("--steps", "2", "--duration", "0.5", "--precision", "fp32")

PEAK = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stderr[-4000:])
print(done.stdout)
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""


def write_job(folder: Path, n: int) -> set[str]:
    """A job of ``n`` rows over eight references (distinct ids, seeded prompts and seeds); returns the ids."""
    draw = rng(f"load-{n}")
    (folder / "refs").mkdir(parents=True)
    for i in range(8):
        buf = io.BytesIO()
        sf.write(buf, tone(1.0, freq=220.0 * (i + 1)).numpy(), 16000, format="WAV")
        (folder / "refs" / f"r{i}.wav").write_bytes(buf.getvalue())
    ids = [f"item{i:05d}" for i in range(n)]
    rows = [
        {
            "id": i,
            "prompt": draw.choice(PROMPTS),
            "reference": f"refs/r{draw.randrange(8)}.wav",
            "seed": draw.randrange(9999),
        }
        for i in ids
    ]
    (folder / "job.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return set(ids)


def run_job(folder: Path, pipeline: str, api: str) -> tuple[dict, float]:
    """(the flow's summary, peak RSS in MB) of the job in ``folder`` run by a fresh flow process."""
    flow = [sys.executable, "-m", "flows.batch_generate", "--jobs", str(folder / "job.jsonl")]
    flow += ["--out", str(folder / "out"), "--pipeline", pipeline, "--batch-size", "8", *RENDER]
    env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PEAK, *flow], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    peak_kb = int(out.rsplit("PEAK_RSS_KB", 1)[1])
    summary = json.loads(out[out.index("{") : out.rindex("}") + 1])
    return summary, peak_kb / 1024


def accounted(out: Path, ids: set[str]) -> tuple[int, int]:
    """(items lost, items duplicated): ids with no output, ids with more than one audio or sidecar."""
    audio = [p.name.rsplit("-", 1)[0] for p in out.glob("item*-*.wav")]
    sidecars = [json.loads(p.read_text())["id"] for p in out.glob("item*-*.json")]
    manifest = json.loads((out / "manifest.json").read_text())["outputs"]
    lost = len(ids - set(audio)) + len(ids - set(sidecars)) + len(ids - set(manifest))
    duplicated = (len(audio) - len(set(audio))) + (len(sidecars) - len(set(sidecars)))
    assert not (set(audio) | set(sidecars) | set(manifest)) - ids, "outputs of items the job does not have"
    return lost, duplicated


def steadiness(out: Path) -> float:
    """Render time per item of the last tenth of the batches over the first tenth's (batches in plan order)."""
    per_batch: dict[int, float] = {}
    for p in out.glob("item*-*.json"):
        sidecar = json.loads(p.read_text())
        per_batch[int(sidecar["id"][4:]) // 8] = sidecar["seconds"]  # plan order: ids sorted, batches of 8
    seconds = [per_batch[k] for k in sorted(per_batch)]
    tenth = max(1, len(seconds) // 10)
    return statistics.median(seconds[-tenth:]) / statistics.median(seconds[:tenth])


@pytest.fixture(scope="module")
def pipeline(tiny_text, tmp_path_factory) -> str:
    named = os.environ.get("SEAP_FAULTS_MODEL")
    if named:
        return str(Path(named).resolve())
    path = tmp_path_factory.mktemp("load") / "tiny-pipeline"
    make_tiny_pipeline(tiny_text).save_pretrained(path)
    return str(path)


def test_a_job_ten_times_larger_keeps_its_peak_memory_and_throughput_and_every_item(
    tmp_path, pipeline, prefect_harness
):
    from prefect.settings import PREFECT_API_URL

    figures = {}
    for n in SIZES:
        ids = write_job(tmp_path / str(n), n)
        summary, peak_mb = run_job(tmp_path / str(n), pipeline, PREFECT_API_URL.value())
        lost, duplicated = accounted(tmp_path / str(n) / "out", ids)
        assert (lost, duplicated) == (0, 0)
        assert (summary["generated"], summary["failed"], summary["bad_rows"]) == (n, 0, 0)
        figures[n] = {"peak_rss_mb": round(peak_mb, 1), "items_per_s": summary["generated_per_second"]}
    small, large = (figures[n] for n in SIZES)
    assert large["peak_rss_mb"] <= small["peak_rss_mb"] + RSS_SLACK_MB, figures
    steady = steadiness(tmp_path / str(SIZES[1]) / "out")  # the smaller job has too few batches for tenths
    assert 1 / STEADY <= steady <= STEADY, (steady, figures)
    record(
        "load",
        f"batch job, {SIZES[0]} vs {SIZES[1]} items ({Path(pipeline).name}, {' '.join(RENDER)})",
        trials=sum(SIZES),
        kept=sum(SIZES),
        lost=0,
        duplicated=0,
        **{f"{k}_{n}": v for n in SIZES for k, v in figures[n].items()},
        last_over_first_tenth=round(steady, 3),
    )
