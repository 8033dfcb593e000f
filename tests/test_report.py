"""The evaluation report: one self-contained HTML page (checked as text, and in a real headless Chromium)."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import soundfile as sf

from seap_model.audio import MelSettings
from seap_model.eval.report import Clip, Example, Table, write_report

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"  # uploaded by CI
PROMPT = 'a <b>bell</b> & "chimes"'
SECONDS = 0.5


def _sine(freq: float, sr: int) -> np.ndarray:
    t = np.arange(int(SECONDS * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _noise(sr: int, seed: int) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(SECONDS * sr))).astype(np.float32)


def _examples() -> list[Example]:
    return [
        Example(
            title=f"test_000{i} · bell (transfer, seed {i})",
            prompt=PROMPT,
            clips=(
                Clip("reference", _sine(440.0 * (i + 1), 16000), 16000),
                Clip("SEAP", _noise(16000, i), 16000),
                Clip("target", _sine(660.0, 22050), 22050),  # resampled for the spectrogram
            ),
        )
        for i in range(2)
    ]


def _tables() -> list[Table]:
    return [
        Table(
            "Distances", ("system", "FAD", "n"), (("SEAP", 1.234567, 40), ("<b>text-only</b>", None, 40)), "n: items"
        ),
        Table("Style", ("metric", "mean"), (("CLAP", 0.000123456),), note="+- is one standard deviation"),
    ]


@pytest.fixture(scope="module")
def figure(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fig") / "losses.png"
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2], [3, 1, 2])
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory, figure) -> Path:
    path = tmp_path_factory.mktemp("report") / "sub" / "report.html"
    out = write_report(
        path,
        title="Evaluation <test>",
        intro="First paragraph with <script>.\n\nSecond & last.",
        tables=_tables(),
        figures=[figure],
        examples=_examples(),
        mel=MelSettings(),
    )
    assert out == path and path.is_file()
    assert not list(path.parent.glob("*.part"))
    return path


def test_report_is_self_contained(report):
    page = report.read_text(encoding="utf-8")
    for bad in ('src="http', "src='http", 'href="http', "href='http", "<script", "<link", "url(", "@import"):
        assert bad not in page.lower(), bad
    refs = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', page)
    assert refs and all(r.startswith("data:") for r in refs)


def test_report_audio_decodes(report):
    page = report.read_text(encoding="utf-8")
    assert page.count("<audio") == 6
    assert page.count('<audio controls preload="auto"') == 6
    uris = re.findall(r'src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"', page)
    expected = [(c.sample_rate, len(c.wave)) for e in _examples() for c in e.clips]
    assert len(uris) == len(expected) == 6
    for uri, (sr, n) in zip(uris, expected):
        info = sf.info(io.BytesIO(base64.b64decode(uri, validate=True)))
        wave, rate = sf.read(io.BytesIO(base64.b64decode(uri)), dtype="float32")
        assert info.subtype == "PCM_16" and info.channels == 1
        assert rate == sr and len(wave) == n


def test_report_images_and_text(report, figure):
    page = report.read_text(encoding="utf-8")
    pngs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(pngs) == 7  # 6 spectrograms + 1 figure
    assert all(base64.b64decode(p, validate=True).startswith(b"\x89PNG") for p in pngs)
    assert base64.b64encode(figure.read_bytes()).decode() in pngs
    assert "<figcaption>losses.png</figcaption>" in page
    assert "&lt;b&gt;bell&lt;/b&gt; &amp; &quot;chimes&quot;" in page and "<b>bell" not in page
    assert "&lt;b&gt;text-only&lt;/b&gt;" in page and "<b>text-only" not in page
    assert "<title>Evaluation &lt;test&gt;</title>" in page
    assert "<p>First paragraph with &lt;script&gt;.</p>" in page and "<p>Second &amp; last.</p>" in page
    assert "test_0001 · bell (transfer, seed 1)" in page
    for cell in (">1.23<", ">40<", ">–<", ">0.000123<", "n: items", "+- is one standard deviation"):
        assert cell in page, cell


@pytest.mark.parametrize("bad", [np.array([0.0, np.nan, 0.1], dtype=np.float32), np.zeros(0, dtype=np.float32)])
def test_bad_clip_raises_naming_it(tmp_path, bad):
    examples = _examples()
    examples[1] = Example("ex-bad", "p", (examples[1].clips[0], Clip("broken-clip", bad, 16000)))
    path = tmp_path / "r.html"
    with pytest.raises(ValueError, match=r"ex-bad.*broken-clip"):
        write_report(path, title="t", intro="", tables=[], figures=[], examples=examples, mel=MelSettings())
    assert not path.exists() and not list(tmp_path.iterdir())


def test_missing_figure_raises(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_report(
            tmp_path / "r.html", title="t", intro="", tables=[], figures=[missing], examples=[], mel=MelSettings()
        )
    assert not (tmp_path / "r.html").exists()


def test_report_plays_in_headless_chromium(report):
    """Open the page in Debian's Chromium: every player loads its WAV, every image decodes; screenshot for CI."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(
            f"playwright is not importable ({exc}): install it with `pip install playwright` "
            "(`.venv/bin/python -m pip install playwright==1.65.2`; no `playwright install`: Debian's chromium is used)"
        )
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium not found on PATH: install Debian's browser with `apt-get install chromium`")
    shot = ARTIFACTS / "report.png"
    ARTIFACTS.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(report.resolve().as_uri(), wait_until="load")
            try:
                page.wait_for_function(
                    "() => [...document.querySelectorAll('audio')].every(a => a.readyState >= 1)", timeout=30_000
                )
            except Exception as exc:
                states = page.evaluate(
                    "() => [...document.querySelectorAll('audio')].map(a => [a.readyState, a.error && a.error.code])"
                )
                pytest.fail(f"audio metadata did not load within 30 s: [readyState, error] = {states} ({exc})")
            durations = page.evaluate("() => [...document.querySelectorAll('audio')].map(a => a.duration)")
            widths = page.evaluate("() => [...document.images].map(i => i.complete ? i.naturalWidth : 0)")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert len(durations) == 6
    assert all(isinstance(d, int | float) and 0 < d < float("inf") for d in durations), durations
    assert durations == pytest.approx([SECONDS] * 6, abs=0.01)
    assert len(widths) == 7 and all(w > 0 for w in widths), widths
    assert shot.is_file() and shot.stat().st_size > 0
