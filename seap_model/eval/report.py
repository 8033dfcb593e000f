"""One HTML page per evaluation: intro text, metric tables, figures and listening examples.

Each example shows its prompt and, per clip (reference, SEAP, text-only, target, ...), a player
and a log-mel spectrogram drawn on a colour range shared within the example, so clips can be
heard and compared side by side. The page is self-contained: audio is embedded as 16-bit PCM
WAV ``data:`` URIs, images as base64 PNG, CSS inline, no scripts and no links to other files or
the network, so one file can be archived, attached to a run or opened offline years later.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import soundfile as sf
import torch

from seap_model.audio import LogMel, MelSettings, fit_length, resample

DB_RANGE = 80.0  # colour range of the spectrograms below the loudest bin of the example, in dB
_DB_PER_NEPER = 20.0 / math.log(10.0)  # LogMel gives ln(magnitude); 20*log10 = ln * this
_NUM = ' class="num"'

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
p.note{color:#555;font-size:.9em;margin-top:.2em}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
img{max-width:100%}.prompt{font-style:italic}.clips{display:flex;flex-wrap:wrap;gap:1em}
.clip{border:1px solid #ddd;border-radius:4px;padding:.5em}.clip b{display:block;margin-bottom:.3em}
audio{display:block;width:320px}
"""


@dataclass(frozen=True)
class Clip:
    name: str
    wave: np.ndarray
    sample_rate: int


@dataclass(frozen=True)
class Example:
    title: str
    prompt: str
    clips: tuple[Clip, ...]


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    note: str = ""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell(value: object) -> tuple[str, bool]:
    """Cell text (unescaped) and whether it is a number."""
    if value is None:
        return "–", False
    if isinstance(value, bool | str):
        return str(value), False
    if isinstance(value, numbers.Integral):
        return str(int(value)), True
    if isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x) or abs(x) < 1000:
            return f"{x:.3g}", True
        return f"{x:.0f}", True  # no scientific notation for large values
    return str(value), False


def _png_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})  # no version stamp: same page per run
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _wav_uri(wave: np.ndarray, sample_rate: int) -> str:
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _checked_wave(example: Example, clip: Clip) -> np.ndarray:
    wave = np.array(clip.wave, dtype=np.float32)  # a contiguous copy torch.from_numpy accepts
    problem = None
    if wave.ndim != 1:
        problem = f"is not mono 1-D (shape {wave.shape})"
    elif wave.size == 0:
        problem = "is empty (0 samples)"
    elif not np.isfinite(wave).all():
        problem = "contains NaN or infinite samples"
    elif clip.sample_rate <= 0:
        problem = f"has invalid sample rate {clip.sample_rate}"
    if problem:
        raise ValueError(f"report example {example.title!r}, clip {clip.name!r}: audio {problem}")
    return wave


def _example_html(example: Example, logmel: LogMel) -> str:
    mel = logmel.settings
    waves, spectra = [], []
    for clip in example.clips:
        wave = _checked_wave(example, clip)
        x = resample(torch.from_numpy(wave), clip.sample_rate, mel.sample_rate)
        x = fit_length(x, max(x.numel(), mel.n_fft))  # reflect padding of the STFT needs n_fft/2 samples
        with torch.no_grad():
            spectra.append(logmel(x).numpy() * _DB_PER_NEPER)
        waves.append(wave)
    vmax = max((float(s.max()) for s in spectra), default=0.0)
    vmin = max(vmax - DB_RANGE, math.log(mel.log_floor) * _DB_PER_NEPER)
    hop = mel.hop_length / mel.sample_rate
    cells = []
    for clip, wave, spec in zip(example.clips, waves, spectra):
        fig, ax = plt.subplots(figsize=(3.2, 2.0))
        extent = (0, spec.shape[-1] * hop, 0, spec.shape[0])
        image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax, extent=extent)
        fig.colorbar(image, ax=ax, label="dB")
        ax.set_xlabel("s", fontsize=8)
        ax.set_ylabel("mel bin", fontsize=8)
        ax.tick_params(labelsize=7)
        fig.tight_layout()
        alt = f"log-mel spectrogram of {clip.name}"
        cells.append(
            f'<div class="clip"><b>{_esc(clip.name)}</b>'
            f'<audio controls preload="auto" src="{_wav_uri(wave, clip.sample_rate)}"></audio>'
            f'<img src="{_png_uri(fig)}" alt="{_esc(alt)}"></div>'
        )
    return (
        f'<section class="example"><h3>{_esc(example.title)}</h3>'
        f'<p class="prompt">{_esc(example.prompt)}</p><div class="clips">{"".join(cells)}</div></section>'
    )


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in table.columns)
    body = []
    for i, row in enumerate(table.rows):
        if len(row) != len(table.columns):
            raise ValueError(
                f"report table {table.title!r}: row {i} has {len(row)} cells, {len(table.columns)} columns"
            )
        cells = (f"<td{_NUM if num else ''}>{_esc(text)}</td>" for text, num in map(_cell, row))
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{_esc(table.note)}</p>' if table.note else ""
    return f"<h3>{_esc(table.title)}</h3><table><tr>{head}</tr>{''.join(body)}</table>{note}"


def write_report(
    path: str | Path,
    *,
    title: str,
    intro: str,
    tables: list[Table],
    figures: list[Path],
    examples: list[Example],
    mel: MelSettings,
) -> Path:
    """Render the page to ``path`` atomically (temp file, then rename) and return ``path``."""
    path = Path(path)
    for figure in figures:
        if not Path(figure).is_file():
            raise FileNotFoundError(f"report figure not found: {figure}")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", intro) if p.strip()]
    parts = [f"<h1>{_esc(title)}</h1>", *(f"<p>{_esc(p)}</p>" for p in paragraphs)]
    if tables:
        parts += ["<h2>Metrics</h2>", *map(_table_html, tables)]
    if figures:
        parts.append("<h2>Figures</h2>")
        for figure in map(Path, figures):
            uri = "data:image/png;base64," + base64.b64encode(figure.read_bytes()).decode("ascii")
            name = _esc(figure.name)
            parts.append(f'<figure><img src="{uri}" alt="{name}"><figcaption>{name}</figcaption></figure>')
    if examples:
        logmel = LogMel(mel).eval()
        parts += ["<h2>Examples</h2>", *(_example_html(e, logmel) for e in examples)]
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>\n'
        f"<body>\n{chr(10).join(parts)}\n</body></html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
