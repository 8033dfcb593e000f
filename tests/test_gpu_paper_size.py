"""benchmarks/gpu_paper_size.py at --tiny size on the CPU: it runs, and its JSON holds every measurement.

(No test with torch.compile enabled: compiling even the tiny U-Net on a CPU takes about two minutes.)
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_STEPS = {"ddpm": 4, "dpm_solver++": 2}  # the script's --tiny step counts


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_paper_size") / "r.json"
    cmd = [sys.executable, "benchmarks/gpu_paper_size.py", "--tiny", "--no-compile", "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=300, capture_output=True, text=True)
    return json.loads(out.read_text())


def test_inference_both_samplers(tiny_results):
    assert tiny_results["config"]["tiny"] is True
    eager = tiny_results["inference"]["eager"]
    for name, steps in TINY_STEPS.items():
        run = eager[name]
        assert math.isfinite(run["clips_per_s"]) and run["clips_per_s"] > 0
        assert run["steps"] == steps
        assert run["unet_calls"] == run["unet_calls_per_clip"] == steps  # guidance batched: one call per step
        assert run["unet_rows_per_call"] == 2 * run["batch"]
        assert run["finite"]
        assert run["seconds_per_clip"] == pytest.approx(1 / run["clips_per_s"])
        assert run["real_time_factor"] == pytest.approx(run["seconds_per_clip"] / 10.24)
    assert tiny_results["inference"]["compiled"] == {"skipped": "--no-compile"}


def test_training_and_flops(tiny_results):
    training, flops = tiny_results["training"], tiny_results["flops"]
    assert training["steps_per_s"] > 0 and training["finite"]
    assert training["peak_memory_bytes"] > 0
    assert flops["flops_per_unet_call"] > 0 and flops["achieved_tflops"] > 0
    if tiny_results["config"]["device"] == "cpu":
        assert flops["peak_bf16_tflops"] is None and flops["fraction_of_peak"] is None
