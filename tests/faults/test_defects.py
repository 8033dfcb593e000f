"""Known small defects, kept as regressions: a refused sampling flag is one line naming the flag (exit code 2),
never pydantic's multi-line message with its URL; a silent reference is reported by its file in every path
that reads one (``seap generate``, the generate stage's prompts file, a batch job, the page), never as
"reference 0"."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from seap_model.batch.engine import run
from seap_model.batch.items import generate_items, prompt_file_items
from seap_model.batch.jobs import read_job
from seap_model.batch.storage import LocalStorage
from seap_model.cli import main
from seap_model.config import SamplingParams
from tests.conftest import make_tiny_pipeline
from tests.faults.ledger import record

SAMPLING = SamplingParams(steps=2, guidance=3.0, duration=0.5, precision="fp32")
FLAGS = [
    (["--steps", "0"], "--steps: Input should be greater than 0"),
    (["--guidance", "-1"], "--guidance: Input should be greater than or equal to 0"),
    (["--steps", "1001"], "--steps: Input should be less than or equal to 1000"),
    (["--duration", "0"], "--duration: Input should be greater than 0"),
]


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "http" not in err and "pydantic" not in err, err
    return err.strip()


@pytest.mark.parametrize("clip", [False, True], ids=["flag alone", "with a clip"])
def test_a_refused_sampling_flag_is_one_line_naming_it(capsys, tmp_path, clip):
    extra = ["--prompt", "a dog", "--reference", str(tmp_path / "r.wav"), "--out", str(tmp_path / "o.wav")]
    for flags, message in FLAGS:
        assert (
            _one_line_error(capsys, ["generate", *flags, *(extra if clip else [])])
            == f"seap generate: error: {message}"
        )
    record(
        "defects",
        f"refused sampling flags ({'with a clip' if clip else 'alone'})",
        trials=len(FLAGS),
        rejected=len(FLAGS),
    )


def test_a_silent_reference_is_named_by_its_file_everywhere(capsys, tmp_path, tiny_text):
    from seap_model.serve import Studio

    silent = tmp_path / "refs" / "quiet.wav"
    silent.parent.mkdir()
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    reasons = {}

    fake = tmp_path / "pipeline"  # the reference is checked before the models load
    fake.mkdir()
    (fake / "model_index.json").write_text("{}")
    argv = ["generate", "--pipeline", str(fake), "--prompt", "a dog", "--reference", str(silent), "--out", "o.wav"]
    reasons["seap generate"] = _one_line_error(capsys, argv)

    pipe = make_tiny_pipeline(tiny_text)
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"id": "q", "prompt": "a dog", "reference": "refs/quiet.wav"}))
    items, malformed = prompt_file_items(tmp_path / "prompts.jsonl")
    _, failures, _ = generate_items(pipe, items, tmp_path / "generated", SAMPLING, {"model": "tiny"})
    assert not malformed and len(failures) == 1
    reasons["generate stage"] = failures[0]["reason"]

    (tmp_path / "job.jsonl").write_text(json.dumps({"id": "q", "prompt": "a dog", "reference": "refs/quiet.wav"}))
    job = read_job(str(tmp_path / "job.jsonl"))
    outcomes = run(
        pipe, {"model": "tiny"}, job.storage, LocalStorage(tmp_path / "out"), [job.items[0].request(SAMPLING)], 1
    )
    reasons["batch job"] = outcomes[0]["reason"]

    studio = Studio(pipe, tmp_path / "runs")
    status = studio.generate("a dog", str(silent), 0.0, 2.0, 0.5, 2, studio.own, 3.0, 3.0, 0)[4]
    reasons["the page"] = status

    for where, reason in reasons.items():
        assert "silent" in reason and "reference 0" not in reason, (where, reason)
        assert "quiet.wav" in reason, (where, reason)
    assert str(silent) in reasons["seap generate"] and str(silent) in reasons["batch job"]
    record("defects", "silent reference named by its file", trials=len(reasons), rejected=len(reasons))
