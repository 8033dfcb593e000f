"""A split the evaluation protocols cannot use is a user-fixable problem: `seap evaluate` says so on one line
and exits 2 (``ProtocolError`` is a ``SeapError``), instead of ending in a traceback."""

from __future__ import annotations

import yaml

from seap_model.cli import main
from seap_model.errors import SeapError
from seap_model.eval.protocols import ProtocolError
from tests.test_eval_protocols import CAPTIONS, event, scene, standard_splits, write_serst


def test_protocol_error_is_a_seap_error_and_still_a_value_error():
    assert issubclass(ProtocolError, SeapError) and issubclass(ProtocolError, ValueError)


def test_seap_evaluate_on_a_split_lacking_transfer_references_prints_one_line_and_exits_2(
    tiny_pipeline, tmp_path, capsys
):
    # owl has a single recording (owl_A): its test item can get no transfer reference from another recording.
    splits = standard_splits()
    splits["test"].append(scene("test_3", [event("owl", 0.5, 2.5, "owl_A")]))
    splits["val"].append(scene("val_5", [event("owl", 1.0, 2.0, "owl_A")]))
    serst = write_serst(tmp_path / "serst", {k: CAPTIONS[k] for k in ("bell", "dog", "owl", "rain")}, splits)
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    params = {
        "data": {"serst_dir": str(serst)},
        "finetune": {"out_dir": str(tmp_path / "pipe"), "baseline_dir": str(tmp_path / "text_only")},
        "evaluate": {"out_dir": str(tmp_path / "eval")},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    capsys.readouterr()  # drop the save's progress bar

    assert main(["evaluate", "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("seap evaluate: error: evaluate: the transfer references need"), err[0]
    assert "has none for owl" in err[0] and str(serst) in err[0], err[0]
