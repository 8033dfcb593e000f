"""`seap generate`: works on any WAV (rate, channels); bad input -> one line, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from seap_model.cli import main
from tests.conftest import tone


@pytest.fixture
def saved_pipeline(tiny_pipeline, tmp_path):
    path = tmp_path / "pipe"
    tiny_pipeline.save_pretrained(path)
    return path


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2), (8000, 1)])
def test_generate_any_rate_mono_or_stereo(saved_pipeline, tmp_path, rate, channels):
    wave = tone(1.5, sr=rate).numpy()
    data = np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave
    sf.write(tmp_path / "ref.wav", data, rate)
    out = tmp_path / "out.wav"
    code = main(
        [
            "generate",
            "--pipeline",
            str(saved_pipeline),
            "--prompt",
            "a dog barking",
            "--reference",
            str(tmp_path / "ref.wav"),
            "--out",
            str(out),
            "--steps",
            "2",
            "--duration",
            "0.5",
        ]
    )
    assert code == 0
    audio, sr = sf.read(out)
    assert sr == 16000 and audio.ndim == 1 and len(audio) > 0 and np.isfinite(audio).all()


def _bad_inputs(tmp_path):
    sf.write(tmp_path / "short.wav", tone(0.3).numpy(), 16000)
    sf.write(tmp_path / "ok.wav", tone(1.0).numpy(), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    return [
        (["--prompt", "a dog", "--reference", str(tmp_path / "corrupt.wav")], "cannot read audio"),
        (["--prompt", "   ", "--reference", str(tmp_path / "ok.wav")], "prompt is empty"),
        (["--prompt", "a dog", "--reference", str(tmp_path / "short.wav")], "0.30 s long"),
        (["--prompt", "a dog", "--reference", str(tmp_path / "missing.wav")], "cannot read audio"),
    ]


def test_bad_input_is_one_line_and_exit_2(saved_pipeline, tmp_path, capsys):
    for args, message in _bad_inputs(tmp_path):
        code = main(["generate", "--pipeline", str(saved_pipeline), "--out", str(tmp_path / "o.wav"), *args])
        err = capsys.readouterr().err.strip()
        assert code == 2, args
        assert message in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "o.wav").exists()


def test_console_script_exit_code_without_traceback(saved_pipeline, tmp_path):
    sf.write(tmp_path / "short.wav", tone(0.3).numpy(), 16000)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "seap_model.cli",
            "generate",
            "--pipeline",
            str(saved_pipeline),
            "--prompt",
            "a dog",
            "--reference",
            str(tmp_path / "short.wav"),
            "--out",
            str(tmp_path / "o.wav"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "reference" in result.stderr and "0.30 s" in result.stderr


def test_version_and_verbosity_flags(capsys, tmp_path):
    import pytest

    from seap_model import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"seap {__version__}"
    # -q: warnings only, so a stage's info lines are not printed; -v and -q together are refused
    with pytest.raises(SystemExit):
        main(["-v", "-q", "dag"])


def test_progress_bars_only_on_a_terminal(monkeypatch):
    import io

    from seap_model.progress import progress

    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: no bar
    assert progress(range(3)).disable
    assert progress(range(3), enabled=False).disable


# --- sampling flags: derived from SamplingParams ------------------------------------------------------------------


def _generate_flags() -> dict:
    """``seap generate``'s options by dest."""
    from seap_model.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["generate"]
    return {a.dest: a for a in sub._actions}


def test_every_sampling_field_is_a_generate_flag_with_its_type_default_help_and_choices():
    from typing import get_args

    from seap_model.config import SamplingParams
    from seap_model.flags import flag_name

    flags = _generate_flags()
    for name, info in SamplingParams.model_fields.items():
        flag = flags[name]  # a field added to SamplingParams is a flag with no other edit
        assert flag.option_strings == [flag_name(name)]
        assert info.description in flag.help and f"(default: {info.default})" in flag.help
    assert flags["steps"].type is int and flags["guidance"].type is float
    assert flags["duration"].type is float and flags["vocoder_iterations"].type is int
    assert tuple(flags["scheduler"].choices) == get_args(
        get_args(SamplingParams.model_fields["scheduler"].annotation)[0]
    )
    assert tuple(flags["precision"].choices) == ("auto", "fp32", "bf16", "fp16")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps", "0"], "seap generate: error: --steps: Input should be greater than 0"),
        (["--guidance", "-1"], "seap generate: error: --guidance: Input should be greater than or equal to 0"),
        (["--duration", "0"], "seap generate: error: --duration: Input should be greater than 0"),
        (
            ["--steps", "0", "--guidance", "-1"],
            "seap generate: error: --steps: Input should be greater than 0; "
            "--guidance: Input should be greater than or equal to 0",
        ),
    ],
)
def test_a_refused_sampling_flag_is_one_line_naming_it_and_exit_2(saved_pipeline, tmp_path, capsys, flags, message):
    sf.write(tmp_path / "ok.wav", tone(1.0).numpy(), 16000)
    args = ["--prompt", "a dog", "--reference", str(tmp_path / "ok.wav"), "--out", str(tmp_path / "o.wav")]
    assert main(["generate", "--pipeline", str(saved_pipeline), *args, *flags]) == 2
    assert capsys.readouterr().err.strip() == message
    # the same without the one-clip arguments: the flag is still named, not silently ignored by the stage
    assert main(["generate", *flags]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "o.wav").exists()


def test_sampling_flags_reach_the_clip(saved_pipeline, tmp_path):
    """Flags build the SamplingParams the clip is made with: the flags' clip is the library call's, bit for bit."""
    from seap_model.config import SamplingParams
    from seap_model.generation import generate_one
    from seap_model.pipeline import SEAPPipeline

    sf.write(tmp_path / "ref.wav", tone(1.0).numpy(), 16000)
    flags = ["--steps", "2", "--seed", "5", "--scheduler", "euler", "--style-guidance", "0", "--duration", "0.64"]
    common = ["--prompt", "a dog barking", "--reference", str(tmp_path / "ref.wav")]
    assert (
        main(["generate", "--pipeline", str(saved_pipeline), *common, "--out", str(tmp_path / "cli.wav"), *flags]) == 0
    )
    sampling = SamplingParams(steps=2, seed=5, scheduler="euler", style_guidance=0.0, duration=0.64)
    pipe = SEAPPipeline.from_pretrained(saved_pipeline)
    generate_one(pipe, "a dog barking", tmp_path / "ref.wav", tmp_path / "lib.wav", sampling)
    cli, lib = sf.read(tmp_path / "cli.wav")[0], sf.read(tmp_path / "lib.wav")[0]
    np.testing.assert_array_equal(cli, lib)
    assert abs(len(cli) / 16000 - 0.64) < 0.05
    default = SamplingParams(steps=2, seed=5, duration=0.64)  # another scheduler and guidance: another clip
    generate_one(pipe, "a dog barking", tmp_path / "ref.wav", tmp_path / "other.wav", default)
    assert not np.array_equal(sf.read(tmp_path / "other.wav")[0], cli)


def test_to_argv_gives_the_flags_back():
    import argparse

    from seap_model.config import SamplingParams
    from seap_model.flags import add_model_flags, model_from_flags, to_argv

    parser = argparse.ArgumentParser()
    add_model_flags(parser, SamplingParams)
    for values in (
        SamplingParams(),
        SamplingParams(scheduler="ddim", steps=7, text_guidance=1.5, style_guidance=0.0, seed=3, duration=1.28),
        SamplingParams(precision="bf16", vocoder_iterations=2, guidance=0.1 + 0.2),
    ):
        assert model_from_flags(parser.parse_args(to_argv(values)), SamplingParams) == values
