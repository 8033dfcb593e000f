"""The ablation list is valid params, and the table reads DVC's experiment rows (experiments/ablate.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from seap_model.config import ParamsError, parse_params

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from experiments import ablate  # noqa: E402


def _apply(base: dict, overrides: dict) -> dict:
    out = yaml.safe_load(yaml.safe_dump(base))
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node[part]
        assert leaf in node, f"{dotted} is not a params key"
        node[leaf] = value
    return out


def test_every_ablation_is_a_valid_params_override():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    ablations = ablate.load_ablations()
    assert {"concat", "no-adaptive-norm", "yamnet-encoder", "reference-4s", "train-seed-1"} <= set(ablations)
    for name, overrides in ablations.items():
        params = parse_params(_apply(base, overrides))  # a typo or a bad value fails here, naming the key
        assert params != parse_params(base), name  # each one changes something


def test_a_bad_override_is_caught_by_the_params_model():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    with pytest.raises(ParamsError, match="style"):
        parse_params(_apply(base, {"finetune.style": "sideways"}))


def test_override_args_are_dvc_set_params():
    assert ablate.override_args({"finetune.baseline": False, "data.references.seconds": 4.0}) == [
        "-S",
        "finetune.baseline=false",
        "-S",
        "data.references.seconds=4.0",
    ]


def test_table_reads_prefixed_and_plain_metric_names_and_pools_training_seeds(monkeypatch):
    rows = [
        {"Experiment": "workspace", "transfer.seap.hit": 0.4, "transfer.seap.follow": 0.01},
        {"Experiment": "train-seed-1", "outputs/evaluate/metrics.json:transfer.seap.hit": 0.5},
        {"Experiment": "concat", "transfer.seap.hit": 0.3},
    ]
    monkeypatch.setattr(ablate, "experiments", lambda: rows)
    table = ablate.table(["concat", "train-seed-1", "reference-4s"])
    header, *body = table
    hit = header.index("transfer hit")
    by_name = {row[0]: row for row in body}
    assert by_name["workspace"][hit] == 0.4 and by_name["train-seed-1"][hit] == 0.5 and by_name["concat"][hit] == 0.3
    assert by_name["reference-4s"][hit] == "not run"
    assert by_name["training seeds (2)"][hit] == "0.45 ± 0.071"
