"""params.yaml validation: typos, wrong types and impossible values stop with a message naming the key."""

from __future__ import annotations

import pytest
import yaml

from seap_model.cli import main
from seap_model.config import Params, ParamsError, load_params, merge_params, parse_params


def test_shipped_params_and_ci_profile_are_valid():
    assert load_params("params.yaml") == Params()  # params.yaml spells out the defaults
    ci = merge_params(load_params("params.yaml"), "configs/ci.yaml")
    assert ci.finetune.steps < 50 and ci.audio.sample_rate == 16000
    paper = merge_params(load_params("params.yaml"), "configs/paper.yaml")
    assert paper.finetune.optimizer == "adafactor" and paper.finetune.train_seconds == 10.24


@pytest.mark.parametrize(
    "data, key, text",
    [
        ({"finetune": {"stepz": 10}}, "finetune.stepz", "unknown key"),
        ({"finetune": {"steps": -5}}, "finetune.steps", "greater than 0"),
        ({"audio": {"sample_rate": 0}}, "audio.sample_rate", "greater than 0"),
        ({"finetune": {"lr": "fast"}}, "finetune.lr", "valid number"),
        ({"finetune": {"unet": {"cross_attention": [True]}}}, "finetune.unet", "one flag per entry"),
        ({"codec": {"type": "pretrained"}}, "codec", "needs codec.pretrained"),
        ({"audio": {"f_max": 9000}}, "audio", "Nyquist"),
        ({"data": {"split": {"val": 0.5, "test": 0.5}}}, "data.split", "leave clips"),
        ({"evaluat": {}}, "evaluat", "unknown key"),
    ],
)
def test_bad_values_name_the_key(data, key, text):
    with pytest.raises(ParamsError) as err:
        parse_params(data, "params.yaml")
    message = str(err.value)
    assert f"  {key}" in message and text in message


def test_file_errors(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("finetune: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(tmp_path / "list.yaml")


def test_cli_reports_a_typo_and_exits_2(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"finetune": {"learning_rate": 1e-3}}))
    assert main(["finetune", "--params", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert "finetune.learning_rate: unknown key" in err and "Traceback" not in err


def test_cli_writes_the_resolved_params(tmp_path):
    out = tmp_path / "full.yaml"
    assert main(["params", "--overrides", "configs/ci.yaml", "--out", str(out)]) == 0
    full = yaml.safe_load(out.read_text())
    assert full["finetune"]["steps"] == merge_params(Params(), "configs/ci.yaml").finetune.steps
    assert full["audio"]["n_mels"] == 64  # untouched keys are filled in


def test_unquoted_off_and_no_mean_the_words_not_false():
    # YAML 1.1 reads `off`/`no` as false; `dvc exp run -S finetune.style=off` writes exactly that
    params = parse_params(yaml.safe_load("finetune: {style: off, mixed_precision: no}"))
    assert params.finetune.style == "off" and params.finetune.mixed_precision == "no"
    with pytest.raises(ParamsError, match="finetune.style"):
        parse_params({"finetune": {"style": True}})


def test_the_style_settings_are_read_in_one_place():
    """FinetuneParams' properties are what the cache, the builders and the finetune stage read."""
    wants = {
        # style, adapter.reference -> uses_reference, uses_adapter, uses_reference_attention, uses_frames
        ("off", "frames"): (False, False, False, False),
        ("cross_attention", "pooled"): (True, True, False, False),
        ("concat", "pooled"): (True, True, False, False),
        ("cross_attention", "frames"): (True, True, False, True),
        ("decoupled", "pooled"): (True, False, True, False),
        ("decoupled", "frames"): (True, False, True, True),
    }
    for (style, reference), want in wants.items():
        fp = parse_params({"finetune": {"style": style, "adapter": {"reference": reference}}}).finetune
        got = (fp.uses_reference, fp.uses_adapter, fp.uses_reference_attention, fp.uses_frames)
        assert got == want, (style, reference)
