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
