"""Benchmark: the trained default model's transfer-protocol table through the old and the new vocoder.

    python benchmarks/vocoder_transfer.py [--params params.yaml] [--items 96] [--out results/vocoder_transfer.json]

The same trained pipelines (``finetune.out_dir``, and the text-only ``finetune.baseline_dir`` when one was
trained), the same items,
seeds and sampling; only the vocoder differs: the pipelines' own (the learned vocoder ``pretrain-vocoder``
trained) against copies whose ``vocoder/`` is the previous default, least-squares mel inversion + Griffin-Lim 32.
Each is evaluated by ``seap evaluate`` (transfer protocol, sweeps cut to one point) into a folder under
``--work``; the record keeps each system's transfer row of each, so docs/vocoder.md can show before and after.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def with_griffin_lim(src: Path, dst: Path, mel) -> Path:
    """The pipeline at ``src`` saved to ``dst`` with the old default vocoder (Griffin-Lim 32) in place of its own."""
    from seap_model.config import VocoderParams
    from seap_model.models.vocoder import make_vocoder
    from seap_model.pipeline import SEAPPipeline

    pipe = SEAPPipeline.from_pretrained(src)
    pipe.register_modules(vocoder=make_vocoder(VocoderParams(type="griffin_lim", griffin_lim_iters=32), mel))
    shutil.rmtree(dst, ignore_errors=True)
    pipe.save_pretrained(dst)
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--items", type=int, default=96)
    p.add_argument("--work", default="outputs/vocoder_transfer", help="pipelines copies and evaluation folders")
    p.add_argument("--out", default="results/vocoder_transfer.json")
    a = p.parse_args()

    from seap_model.config import load_params

    params = load_params(a.params)
    work = Path(a.work)
    seap_dir, baseline_dir = Path(params.finetune.out_dir), Path(params.finetune.baseline_dir)
    has_baseline = (baseline_dir / "model_index.json").is_file()  # finetune.baseline: false leaves none
    old = work / "griffin_lim_32"
    systems = {
        "learned": (seap_dir, baseline_dir),
        "griffin_lim_32": (
            with_griffin_lim(seap_dir, old / "pipeline", params.audio.mel()),
            with_griffin_lim(baseline_dir, old / "text_only", params.audio.mel()) if has_baseline else old / "none",
        ),
    }
    evaluate = {
        "seeds": [0, 1],
        "max_items": a.items,
        "protocols": ["transfer"],
        "guidance_sweep": [4.0],
        "steps_sweep": [params.evaluate.sampling.steps],
        "reference_seconds_sweep": [2.0],
        "style_guidance_sweep": [4.0],
        "sweep_items": 4,
        "report_items": 0,
    }
    rows = {}
    for name, (seap_dir, baseline_dir) in systems.items():
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        overrides = {
            "finetune": {"out_dir": str(seap_dir), "baseline_dir": str(baseline_dir)},
            "evaluate": {**evaluate, "out_dir": str(folder / "eval")},
        }
        (folder / "overrides.yaml").write_text(yaml.safe_dump(overrides, sort_keys=False))
        seap = str(Path(sys.executable).with_name("seap"))
        run_params = folder / "params.yaml"
        base = ["--params", a.params] if a.params != "params.yaml" else []
        subprocess.run(
            [seap, "params", *base, "--overrides", str(folder / "overrides.yaml"), "--out", str(run_params)], check=True
        )
        subprocess.run([seap, "evaluate", "--params", str(run_params)], check=True)
        metrics = json.loads((folder / "eval" / "metrics.json").read_text())
        rows[name] = {"transfer": metrics["transfer"], "swap_over_seed_ratio": metrics.get("swap_over_seed_ratio")}
        print(name, json.dumps(metrics["transfer"].get("seap")), flush=True)
    record = {
        "benchmark": "vocoder_transfer",
        "command": "python benchmarks/vocoder_transfer.py " + " ".join(sys.argv[1:]),
        "items": metrics["items"],
        "seeds": evaluate["seeds"],
        "steps": params.evaluate.sampling.steps,
        "vocoders": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(record, indent=2) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
