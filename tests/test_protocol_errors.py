"""A split the evaluation protocols cannot use is a user-fixable problem: `seap evaluate` says so on one line
and exits 2 (``ProtocolError`` is a ``SeapError``), instead of ending in a traceback."""

from __future__ import annotations

import json

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


def test_evaluate_with_transfer_and_unseen_only_renders_the_unseen_study(tiny_pipeline, tmp_path):
    """The seed experiment's protocol (transfer + unseen captions, no paper protocol): the unseen-caption study
    renders with the paper references, which the evaluation must load even though the paper protocol is off."""
    from seap_model.audio import save_audio
    from tests.conftest import tone
    from tests.test_eval_protocols import write_csv

    # The fixture's dog is not a corpus-v2 class (the label table maps v2's): it plays a horse here.
    splits = json.loads(json.dumps(standard_splits()).replace('"label": "dog"', '"label": "horse"'))
    for rows in splits.values():
        for row in rows:
            for ref in row["references"]:
                ref["audio"] = ref["audio"].replace("_dog_", "_horse_")
    captions = {"bell": CAPTIONS["bell"], "horse": "a horse neighing", "rain": CAPTIONS["rain"]}
    serst = write_serst(tmp_path / "serst", captions, splits)
    for rows in splits.values():
        for row in rows:
            save_audio(serst / row["audio"], tone(4.0).numpy() * 0.5, 16000)
            for ref in row["references"]:
                save_audio(serst / ref["audio"], tone(2.0, freq=660.0).numpy() * 0.5, 16000)
    unseen = [(label, f"{label} paraphrase {k}") for label in captions for k in range(3)]
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    params = {
        "data": {"serst_dir": str(serst)},
        "finetune": {"out_dir": str(tmp_path / "pipe"), "baseline_dir": str(tmp_path / "text_only")},
        "evaluate": {
            "out_dir": str(tmp_path / "eval"),
            "protocols": ["transfer", "unseen"],
            "unseen_captions": str(write_csv(tmp_path / "unseen.csv", unseen)),
            "seeds": [0],
            "sampling": {"steps": 2},
            "sweep_items": 2,
            "guidance_sweep": [4.0],
            "steps_sweep": [2],
            "reference_seconds_sweep": [1.0],
            "style_guidance_sweep": [4.0],
            "report_items": 0,
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["evaluate", "--params", str(tmp_path / "params.yaml")]) == 0
    tables = (tmp_path / "eval" / "tables.md").read_text()
    assert "unseen captions" in tables and "paper protocol" not in tables
