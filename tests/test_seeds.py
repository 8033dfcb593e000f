"""The seed runner (experiments/seeds.py): its systems and variants are valid params, and its table is built
from the committed records alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from seap_model.config import Params, merge_params

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from experiments import seeds  # noqa: E402


@pytest.mark.parametrize("variant", [None, *seeds.VARIANTS])
@pytest.mark.parametrize("system", sorted(seeds.SYSTEMS))
def test_every_system_and_variant_is_a_valid_params_override(tmp_path, system, variant):
    path = tmp_path / "overrides.yaml"
    path.write_text(yaml.safe_dump(seeds.overrides(system, 1, variant)))
    params = merge_params(Params(), path)  # a typo'd key or a bad value fails here, naming it
    assert params.finetune.seed == 1 and not params.finetune.baseline
    assert Path(params.evaluate.out_dir) == seeds.eval_dir(system, 1, variant)
    assert params.evaluate.protocols == ("transfer", "unseen") and params.evaluate.max_items == seeds.ITEMS
    assert params.evaluate.sampling.precision == "bf16" and params.evaluate.sampling.steps == 10
    assert params.evaluate.seeds == ((0,) if variant == "style_sweep" else (0, 1))
    if variant == "train":
        assert params.evaluate.split == "train"
    if variant == "sg8":
        assert params.evaluate.sampling.style_guidance == 8.0


def test_systems_spell_out_what_they_are_whatever_the_default():
    style = {name: seeds.overrides(name, 1)["finetune"].get("style") for name in seeds.SYSTEMS}
    assert {name: value for name, value in style.items() if not name.endswith("_fp32")} == {
        "text_only": "off",
        "pooled": "cross_attention",
        "frames": "cross_attention",
        "decoupled_frames": "decoupled",
        "decoupled_frames_1800": "decoupled",
        "decoupled_frames_outside": "decoupled",
    }
    assert seeds.overrides("decoupled_frames_1800", 1)["finetune"]["steps"] == 1800
    assert seeds.overrides("decoupled_frames_outside", 1)["finetune"]["reference_window"] == "outside"
    # precision too (`auto` resolves per machine): bf16 as every committed record, and a twin in fp32 for each
    for name, system in seeds.SYSTEMS.items():
        base = name.removesuffix("_fp32")
        twin = {**seeds.SYSTEMS[base]["finetune"], "mixed_precision": "no"}
        assert system["finetune"] == (twin if name.endswith("_fp32") else seeds.SYSTEMS[base]["finetune"])
        assert system["finetune"]["mixed_precision"] == ("no" if name.endswith("_fp32") else "bf16")
    assert len(seeds.SYSTEMS) == 12


def test_adopt_takes_the_main_jobs_model_only_if_dvc_says_it_is_current_and_it_was_trained_so(tmp_path, monkeypatch):
    import subprocess

    import seap_model.training.loop as loop

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "models" / "pipeline").mkdir(parents=True)
    (tmp_path / "models" / "pipeline" / "model_index.json").write_text("{}")
    monkeypatch.setattr(seeds, "ROOT", tmp_path)
    monkeypatch.setattr(seeds, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(loop, "native_bf16", lambda: True)  # auto resolves to the systems' bf16
    status = {"out": "{}"}
    real_run = subprocess.run

    def fake_run(cmd, *args, **kwargs):
        if Path(cmd[0]).name == "dvc":
            return subprocess.CompletedProcess(cmd, 0, status["out"], "")
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(seeds.subprocess, "run", fake_run)
    seeds.adopt("decoupled_frames", 0)  # the shipped params train exactly this (top-level seed 0)
    assert (tmp_path / "runs" / "decoupled_frames-seed0" / "model" / "model_index.json").is_file()
    for system, seed in (("decoupled_frames", 1), ("pooled", 0), ("decoupled_frames_outside", 0)):
        with pytest.raises(SystemExit, match="another model"):
            seeds.adopt(system, seed)
    monkeypatch.setattr(loop, "native_bf16", lambda: False)  # here auto would have trained in fp32
    with pytest.raises(SystemExit, match="mixed_precision"):
        seeds.adopt("decoupled_frames", 0)
    monkeypatch.setattr(loop, "native_bf16", lambda: True)
    status["out"] = json.dumps({"finetune": [{"changed deps": {"data/cache": "modified"}}]})
    with pytest.raises(SystemExit, match="not clean"):
        seeds.adopt("decoupled_frames", 0)


def test_a_bf16_system_is_not_run_where_bf16_is_emulated(tmp_path, monkeypatch):
    import seap_model.training.loop as loop

    monkeypatch.setattr(seeds, "RUNS", tmp_path)
    monkeypatch.setattr(loop, "native_bf16", lambda: False)
    with pytest.raises(SystemExit, match="run frames_fp32 here"):
        seeds.run("frames", 1)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def _record(folder: Path, name: str, **metrics) -> None:
    row = dict.fromkeys((*seeds.COLUMNS, "swap_over_seed_ratio", "swap_style_ratio"), None) | metrics
    (folder / f"{name}.json").write_text(json.dumps({"metrics": row}))


def test_table_pools_training_seeds_and_lists_variants_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(seeds, "RECORDS", tmp_path)
    _record(tmp_path, "pooled-seed0", hit=0.4, style=0.5)
    _record(tmp_path, "pooled-seed1", hit=0.6, style=0.5)
    _record(tmp_path, "pooled-seed1-sg8", hit=0.1, style=0.3)
    _record(tmp_path, "text_only-seed2", hit=0.3)
    lines = seeds.table().splitlines()
    pooled = [line for line in lines if line.startswith("| **pooled**")]
    assert len(pooled) == 1 and "| 0.5 ± 0.14 (2) | 0.5 ± 0 (2) |" in pooled[0]  # sg8 stays out of the mean
    assert not any(line.startswith("| **text_only**") for line in lines)  # one seed: no spread to give
    assert any(line.startswith("| text_only | 2 | 0.3 |") for line in lines)
    variants = [line for line in lines if "style guidance 8" in line]
    assert len(variants) == 1 and variants[0].startswith(
        "| pooled, style guidance 8 (text guidance 4) | 1 | 0.1 | 0.3 |"
    )


def test_a_style_sweep_record_keeps_its_rows_and_plot(tmp_path, monkeypatch):
    monkeypatch.setattr(seeds, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(seeds, "RECORDS", tmp_path / "records")
    folder = seeds.eval_dir("decoupled_frames", 1, "style_sweep")
    (folder / "sweeps").mkdir(parents=True)
    row = {name: 0.5 for name in seeds.COLUMNS}
    (folder / "metrics.json").write_text(json.dumps({"transfer": {"seap": row}, "swap_over_seed_ratio": 0.7}))
    (folder / "tables.json").write_text(json.dumps({}))
    lines = ["style_guidance,items,style_similarity,style_follow,label_hit"]
    lines += [f"{g},48,{0.4 + g / 100},0.1,{0.5 - g / 50}" for g in (0.0, 1.0, 2.0, 4.0, 8.0)]
    (folder / "sweeps" / "style_guidance.csv").write_text("\n".join(lines) + "\n")
    (folder / "sweeps.png").write_bytes(b"\x89PNG plot")
    seeds.record("decoupled_frames", 1, "style_sweep")
    saved = json.loads(seeds.record_path("decoupled_frames", 1, "style_sweep").read_text())
    assert [r["style_guidance"] for r in saved["style_guidance_sweep"]] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert saved["style_guidance_sweep"][4]["label_hit"] == pytest.approx(0.34)
    assert saved["evaluate"]["seeds"] == [0] and saved["metrics"]["swap_over_seed_ratio"] == 0.7
    assert (tmp_path / "records" / "decoupled_frames-seed1-style_sweep.png").read_bytes() == b"\x89PNG plot"


def test_systems_pair_with_text_only_of_the_same_seed_item_by_item(tmp_path, monkeypatch):
    monkeypatch.setattr(seeds, "RECORDS", tmp_path)

    def write(name: str, follow: list[float]) -> None:
        per_item = {"follow": follow, "style": [0.5] * len(follow), "hit": [1.0] * len(follow)}
        (tmp_path / f"{name}.json").write_text(json.dumps({"metrics": {}, "per_item": per_item}))

    write("text_only-seed1", [0.00, 0.01, -0.01, 0.00])
    write("decoupled_frames-seed1", [0.05, 0.06, 0.04, 0.05])  # +0.05 on every item
    write("text_only-seed2", [0.0, 0.0, 0.0, 0.0])
    write("decoupled_frames-seed2", [0.03, 0.05, 0.04, 0.04])
    one = seeds.paired("decoupled_frames", 1)
    mean, low, high, items = one["follow"]
    assert mean == pytest.approx(0.05) and items == 4 and low == pytest.approx(0.05) == pytest.approx(high)
    assert one["style"][0] == 0.0 and one["hit"][0] == 0.0
    assert seeds.paired("pooled", 1) == {}  # no record: nothing to pair
    lines = seeds.paired_table().splitlines()
    assert any(line.startswith("| decoupled_frames | 2 | 0.04 [+0.0270, +0.0530] (4)") for line in lines)
    assert any(line.startswith("| **decoupled_frames** | mean ± std (2) | 0.045 ± 0.0071") for line in lines)
    # a variant against the default of the same seed, not against text-only
    write("decoupled_frames_outside-seed1", [0.02, 0.03, 0.01, 0.02])  # -0.03 on every item against the default
    lines = seeds.paired_table(against="decoupled_frames", systems=["decoupled_frames_outside"]).splitlines()
    assert "follow − decoupled_frames" in lines[0] and len(lines) == 3  # one seed: no mean row
    assert lines[2].startswith("| decoupled_frames_outside | 1 | -0.03 [-0.0300, -0.0300] (4)")


def test_a_record_keeps_seed_averaged_per_item_transfer_scores(tmp_path, monkeypatch):
    monkeypatch.setattr(seeds, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(seeds, "RECORDS", tmp_path / "records")
    folder = seeds.eval_dir("pooled", 1)
    folder.mkdir(parents=True)
    row = {name: 0.5 for name in seeds.COLUMNS}
    (folder / "metrics.json").write_text(json.dumps({"transfer": {"seap": row}, "swap_over_seed_ratio": 0.9}))
    per_item = {
        "transfer/seap/0": {"follow": [0.1, 0.3], "style": [0.5, 0.7], "hit": [1.0, 0.0]},
        "transfer/seap/1": {"follow": [0.3, 0.1], "style": [0.7, 0.5], "hit": [1.0, 1.0]},
        "paper/seap/0": {"follow": [9.0, 9.0], "style": [9.0, 9.0], "hit": [9.0, 9.0]},
    }
    (folder / "tables.json").write_text(json.dumps({"per_item": per_item, "unseen": {"seap": {"hit": 0.25}}}))
    seeds.record("pooled", 1)
    saved = json.loads(seeds.record_path("pooled", 1).read_text())
    assert saved["per_item"] == {"follow": [0.2, 0.2], "style": [0.6, 0.6], "hit": [1.0, 0.5]}
    assert saved["metrics"]["unseen_hit"] == 0.25 and saved["metrics"]["swap_over_seed_ratio"] == 0.9


def test_the_v2_goals_are_checked_from_the_records_and_say_what_is_pending(tmp_path):
    from experiments import seeds_goals

    table = seeds_goals.goals(tmp_path)
    assert table.count("pending (no record)") == 6  # nothing recorded yet: every bar pending
    items = 40
    for seed in (0, 1, 2):
        for name, style, hit, follow in (("decoupled_frames", 0.60, 0.50, 0.12), ("text_only", 0.50, 0.49, 0.02)):
            row = dict.fromkeys((*seeds.COLUMNS, "swap_over_seed_ratio", "swap_style_ratio", "unseen_hit"), None)
            row |= {"style": style + 0.005 * seed, "hit": hit, "unseen_hit": hit, "fad_inf_yamnet": 40.0 + seed}
            row |= {"kid_yamnet": 0.02, "swap_over_seed_ratio": 1.1 if name != "text_only" else None}
            per = [follow + 0.01 * ((i % 5) - 2) for i in range(items)]
            body = {"metrics": row, "per_item": {"follow": per, "style": per, "hit": per}}
            (tmp_path / f"{name}-seed{seed}.json").write_text(json.dumps(body))
    lines = {line.split(" | ")[0].lstrip("| "): line for line in seeds_goals.goals(tmp_path).splitlines()[2:]}
    assert lines["reference swap / seed change, median log-mel ratio, test recordings"].endswith("| met |")
    assert "| met |" in lines["style similarity, SEAP − text-only"]  # 0.1 over 3 x 0.005
    assert "0.1 [" in lines["follow, SEAP − text-only per item, averaged over training seeds"]
    assert all("| met |" in lines[f"follow, SEAP − text-only per item, training seed {s}"] for s in (0, 1, 2))
    assert "| met |" in lines["label hit, SEAP − text-only"]
    assert "| met |" in lines["KID, SEAP (text-only)"]
    # the same bars for another system read that system's records: none yet, so every bar is pending
    assert seeds_goals.goals(tmp_path, "decoupled_frames_outside").count("pending (no record)") == 6
    # one seed of text-only missing: the bars that need it say so
    (tmp_path / "text_only-seed2.json").unlink()
    lines = {line.split(" | ")[0].lstrip("| "): line for line in seeds_goals.goals(tmp_path).splitlines()[2:]}
    assert "met so far (2 of 3 seeds)" in lines["style similarity, SEAP − text-only"]
    # a SEAP that loses label hit misses its bar
    for seed in (0, 1, 2):
        path = tmp_path / f"decoupled_frames-seed{seed}.json"
        body = json.loads(path.read_text())
        body["metrics"]["hit"] = 0.3
        path.write_text(json.dumps(body))
    lines = {line.split(" | ")[0].lstrip("| "): line for line in seeds_goals.goals(tmp_path).splitlines()[2:]}
    assert "missed" in lines["label hit, SEAP − text-only"]


def test_all_skips_recorded_steps_and_trains_a_missing_model_before_rescoring_it(tmp_path, monkeypatch):
    monkeypatch.setattr(seeds, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(seeds, "RECORDS", tmp_path / "records")
    plan = [("text_only", 0, None), ("decoupled_frames", 1, None), ("decoupled_frames", 1, "train")]
    monkeypatch.setattr(seeds, "PLAN", plan)
    (tmp_path / "records").mkdir()
    _record(tmp_path / "records", "text_only-seed0")
    (seeds.run_dir("decoupled_frames", 1) / "model").mkdir(parents=True)  # trained here: only rescored
    calls = []
    monkeypatch.setattr(seeds, "train", lambda *a: calls.append(("train", *a)))
    monkeypatch.setattr(seeds, "run", lambda *a: calls.append(("run", *a)))
    monkeypatch.setattr(seeds, "rescore", lambda *a: calls.append(("rescore", *a)))
    seeds.run_all()
    assert calls == [("run", "decoupled_frames", 1), ("rescore", "decoupled_frames", 1, "train")]
    calls.clear()
    (seeds.run_dir("decoupled_frames", 1) / "model").rmdir()  # recorded elsewhere, model gone: train it first
    seeds.run_all()
    assert calls[-2:] == [("train", "decoupled_frames", 1), ("rescore", "decoupled_frames", 1, "train")]


def test_a_systems_own_cache_is_encoded_again_only_when_its_fingerprint_changes_or_a_build_died(tmp_path, monkeypatch):
    import subprocess

    import seap_model.fingerprint

    cache = tmp_path / "cache_outside"
    cache.mkdir()
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"finetune": {"cache_dir": str(cache)}}))
    inputs = {"inputs": "a"}
    monkeypatch.setattr(seap_model.fingerprint, "stage_fingerprint", lambda name, params: {"stage": name, **inputs})
    calls = []

    def seap(*args):
        calls.append(args)
        if "die" in inputs:
            raise subprocess.CalledProcessError(1, args)

    monkeypatch.setattr(seeds, "seap", seap)
    seeds.ensure_cache(path)
    seeds.ensure_cache(path)  # e.g. the next training seed: the same cache, not encoded again
    assert calls == [("cache", "--params", str(path))]
    inputs["inputs"] = "b"  # new code, params or inputs: encoded again
    seeds.ensure_cache(path)
    assert len(calls) == 2 and json.loads((cache / seeds.BUILT_FROM).read_text())["inputs"] == "b"
    inputs.update(inputs="c", die=True)  # a build that dies leaves no stamp ...
    with pytest.raises(subprocess.CalledProcessError):
        seeds.ensure_cache(path)
    assert not (cache / seeds.BUILT_FROM).exists()
    del inputs["die"]
    inputs["inputs"] = "b"  # ... so even the old fingerprint's cache is encoded again
    seeds.ensure_cache(path)
    assert len(calls) == 4
