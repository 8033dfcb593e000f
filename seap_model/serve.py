"""``seap serve``: a Gradio page over one SEAPPipeline (prompt + reference clip in, audio out).

Imported only by ``seap serve``. The model is loaded once; every generation goes through Gradio's queue, one at a
time, and is made exactly as ``seap generate`` makes it (``generate_one`` on the cropped reference saved as a WAV),
so the command line shown under the result reproduces it. Bad input becomes a message in the page.

Uploads: Gradio streams each one to a temporary file and refuses one over ``MAX_UPLOAD_BYTES`` (100 MiB) with
HTTP 413 as soon as it passes the limit, never holding it in memory; a reference over ``MAX_UPLOAD_SECONDS`` is
refused from its header, before it is decoded.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import shlex
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import matplotlib
import numpy as np
import soundfile as sf
import torch

from seap_model.audio import AudioError, LogMel, MelSettings, fit_length, save_audio
from seap_model.config import SamplingParams
from seap_model.errors import SeapError
from seap_model.flags import to_argv
from seap_model.generation import generate_one, load_reference
from seap_model.pipeline import SEAPPipeline
from seap_model.samplers import SAMPLERS, sampler_name

matplotlib.use("Agg")
import matplotlib.pyplot as plt

log = logging.getLogger(__name__)
MAX_UPLOAD_SECONDS = 60.0  # longer uploads are refused from the file header, before decoding
MAX_UPLOAD_BYTES = 100 * 2**20  # larger uploads are refused while they arrive (HTTP 413)
MAX_CROP_SECONDS = 10.0
EXAMPLES_PER_PAGE = 5
_DB_PER_NEPER = 20.0 / math.log(10.0)
_USER_ERRORS = (SeapError, ValueError, FloatingPointError)  # AudioError and pydantic's ValidationError included


def corpus_examples(corpus: str | Path, limit: int = EXAMPLES_PER_PAGE) -> list[list[str]]:
    """[audio path, caption] for the first clip (at least 1 s long) of each of the first ``limit`` labels of a
    corpus with a ``metadata.csv`` (file, label, caption, ..., duration); [] without one."""
    corpus = Path(corpus)
    if not (corpus / "metadata.csv").is_file():
        return []
    examples, seen = [], set()
    with open(corpus / "metadata.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            path = corpus / row["file"]
            if row["label"] in seen or float(row.get("duration") or 0) < 1.0 or not path.is_file():
                continue
            seen.add(row["label"])
            examples.append([str(path.resolve()), row["caption"]])
            if len(examples) == limit:
                break
    return examples


def crop_reference(src: str, start: float, length: float, dest: Path) -> str:
    """Write ``length`` s of ``src`` from ``start`` (mono, its own rate) to ``dest``; return how to name it.

    AudioError for a file soundfile cannot read, one over ``MAX_UPLOAD_SECONDS`` (from its header: the audio is
    not decoded) or a start past its end. Only the crop is decoded."""
    name = Path(src).name
    try:
        info = sf.info(src)
    except Exception as exc:  # soundfile raises several types
        reason = str(exc).replace(src, name)
        raise AudioError(f"reference {name}: not an audio file that can be read ({reason})") from None
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if seconds > MAX_UPLOAD_SECONDS:
        raise AudioError(
            f"reference {name} is {seconds:.1f} s long: upload at most {MAX_UPLOAD_SECONDS:.0f} s "
            "(cut the part you want first)"
        )
    if start >= seconds:
        raise AudioError(f"crop start {start:.2f} s is past the end of {name} ({seconds:.2f} s)")
    first, count = round(start * info.samplerate), round(length * info.samplerate)
    try:
        data, sr = sf.read(src, start=first, frames=count, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"reference {name}: cannot decode audio ({str(exc).replace(src, name)})") from None
    if not np.isfinite(data).all():
        raise AudioError(f"reference {name}: contains NaN or infinite samples")
    save_audio(dest, data.mean(axis=1), sr)
    whole = first == 0 and first + count >= info.frames
    return name if whole else f"{name} [{start:.2f}-{min(start + length, seconds):.2f} s]"


def mel_image(path: Path, clips: list[tuple[str, torch.Tensor]], mel: MelSettings) -> str:
    """One PNG of the clips' log-mel spectrograms side by side, on one colour range (80 dB below the loudest)."""
    logmel = LogMel(mel).eval()
    with torch.no_grad():
        specs = [logmel(fit_length(w.float(), max(w.numel(), mel.n_fft))).numpy() * _DB_PER_NEPER for _, w in clips]
    top = max(float(s.max()) for s in specs)
    fig, axes = plt.subplots(1, len(clips), figsize=(4.2 * len(clips), 2.6), squeeze=False)
    for ax, (title, _), spec in zip(axes[0], clips, specs):
        extent = (0.0, spec.shape[1] * mel.hop_length / mel.sample_rate, 0, spec.shape[0])
        ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top, extent=extent)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("seconds", fontsize=8)
        ax.set_ylabel("mel bin", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def command_line(prompt: str, reference: Path, out: Path, pipeline_dir: str, sampling: SamplingParams) -> str:
    """The ``seap generate`` call that makes the same clip (every sampling setting, as ``seap generate``'s flags
    derive from ``SamplingParams``)."""
    args = ["seap", "generate", *([f"--prompt={prompt}"] if prompt.startswith("-") else ["--prompt", prompt])]
    args += ["--reference", str(reference), "--out", str(out), "--pipeline", pipeline_dir, *to_argv(sampling)]
    return " ".join(shlex.quote(a) for a in args)


def slider(field: str, step: float, label: str, elem_id: str, value=None) -> gr.Slider:
    """A slider over a ``SamplingParams`` field: its range from the field's bounds, its default the field's."""
    info = SamplingParams.model_fields[field]
    bounds = {type(m).__name__: m for m in info.metadata}
    low = bounds["Ge"].ge if "Ge" in bounds else bounds["Gt"].gt + step
    high = bounds["Le"].le
    default = info.default if value is None else value
    return gr.Slider(low, high, default, step=step, label=label, elem_id=elem_id)


DISTILLED = "distilled (1-4 steps)"  # the sampler menu's entry for the distilled pipeline beside the teacher


def _load(pipe_or_dir: SEAPPipeline | str | Path) -> tuple[SEAPPipeline, str]:
    if isinstance(pipe_or_dir, SEAPPipeline):
        return pipe_or_dir, str(getattr(pipe_or_dir, "name_or_path", None) or "DIR")
    if not (Path(pipe_or_dir) / "model_index.json").is_file():
        raise FileNotFoundError(f"{pipe_or_dir}: no saved pipeline (run `dvc repro` or pass --pipeline)")
    return SEAPPipeline.from_pretrained(str(pipe_or_dir)), str(pipe_or_dir)


class Studio:
    """The loaded pipeline (and, when there is one, its distilled few-step version, offered in the sampler menu)
    and the page's two actions. One lock: a generation never shares the model."""

    def __init__(
        self,
        pipe_or_dir: SEAPPipeline | str | Path,
        workdir: str | Path | None = None,
        fast: SEAPPipeline | str | Path | None = None,
    ):
        self.pipe, self.pipeline_dir = _load(pipe_or_dir)
        self.own = sampler_name(self.pipe.scheduler) or f"saved ({type(self.pipe.scheduler).__name__})"
        distilled = self.pipe.config.distilled_guidance is not None  # it samples with its own sampler only
        self.samplers = [self.own] if distilled else [*SAMPLERS] + ([] if self.own in SAMPLERS else [self.own])
        self.fast = _load(fast) if fast is not None else None
        if self.fast is not None:
            self.samplers.append(DISTILLED)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="seap-serve-"))
        self.lock, self.runs = threading.Lock(), itertools.count(1)

    def default_steps(self, sampler: str) -> int:
        """The step count a sampler menu entry starts at: the distilled pipeline's few, else the pipeline's own."""
        return (self.fast[0] if sampler == DISTILLED else self.pipe).default_steps

    def _render(self, fn):
        """Run ``fn()`` holding the model (and its sampler): one generation at a time."""
        with self.lock:
            return fn()

    def generate(self, prompt, reference, start, length, duration, steps, sampler, g_text, g_style, seed):
        """-> output audio, spectrograms, download, command, status, last run (for the comparison), and the
        comparison's outputs cleared."""
        try:
            t0 = time.perf_counter()
            if not (prompt or "").strip():
                raise ValueError("the prompt is empty: describe the sound to make")
            if not reference:
                raise ValueError("no reference: upload or record a clip of the sound event (at least 0.5 s)")
            if seed is None or sampler not in self.samplers:
                raise ValueError("seed and sampler must be set")
            pipe, pipeline_dir = self.fast if sampler == DISTILLED else (self.pipe, self.pipeline_dir)
            sampling = SamplingParams(
                scheduler=None if sampler in (self.own, DISTILLED) else sampler,
                steps=int(steps),
                guidance=g_text,
                text_guidance=g_text,
                style_guidance=g_style,
                seed=int(seed),
                duration=float(duration),
            )
            run = self.workdir / f"{next(self.runs):04d}"
            run.mkdir(parents=True)
            ref_path, out = run / "reference.wav", run / "out.wav"
            label = crop_reference(reference, float(start), float(length), ref_path)
            try:
                ref = load_reference(ref_path, self.pipe.sample_rate)
            except AudioError as exc:
                raise AudioError(str(exc).replace(str(ref_path), label)) from None
            self._render(lambda: generate_one(pipe, prompt, ref_path, out, sampling))
            wave = torch.from_numpy(sf.read(str(out), dtype="float32")[0])
            image = mel_image(run / "mel.png", [(f"reference: {label}", ref), ("output", wave)], self.pipe.mel_settings)
            command = command_line(prompt, ref_path, out, pipeline_dir, sampling)
            last = {"prompt": prompt, "run": run, "sampling": sampling, "fast": sampler == DISTILLED}
            seconds = wave.numel() / self.pipe.sample_rate
            status = f"Generated {seconds:.2f} s of audio in {time.perf_counter() - t0:.1f} s (seed {sampling.seed})."
            return str(out), image, str(out), command, status, last, None, None, ""
        except _USER_ERRORS as exc:
            return self._failed(str(exc))
        except Exception as exc:  # a bug: the page says so, the log keeps the traceback, the server keeps serving
            log.exception("generation failed")
            return self._failed(f"generation failed ({type(exc).__name__}: {exc})")

    def compare(self, last):
        """The last generation again with the reference dropped (reference=None), same prompt, seed, settings."""
        try:
            if not last:
                raise ValueError("generate a clip first: the comparison reuses its prompt, seed and settings")
            run, sampling = last["run"], last["sampling"].model_copy(update={"style_guidance": 0.0})
            pipe, pipeline_dir = self.fast if last.get("fast") else (self.pipe, self.pipeline_dir)
            out = run / "text_only.wav"
            self._render(lambda: generate_one(pipe, last["prompt"], None, out, sampling))
            waves = [torch.from_numpy(sf.read(str(run / n), dtype="float32")[0]) for n in ("out.wav", "text_only.wav")]
            image = mel_image(
                run / "mel_text_only.png",
                [("with the reference", waves[0]), ("text only", waves[1])],
                self.pipe.mel_settings,
            )
            command = command_line(last["prompt"], run / "reference.wav", out, pipeline_dir, sampling)
            note = "\n# --style-guidance 0 drops the reference, as reference=None does"
            return str(out), image, command + note, f"Text-only version rendered with seed {sampling.seed}."
        except _USER_ERRORS as exc:
            return None, None, "", f"**Error:** {exc}"
        except Exception as exc:
            log.exception("comparison failed")
            return None, None, "", f"**Error:** generation failed ({type(exc).__name__}: {exc})"

    @staticmethod
    def _failed(message: str) -> tuple:
        return None, None, None, "", f"**Error:** {message}", None, None, None, ""


def build_app(
    pipe_or_dir,
    examples_dir: str | Path = "data/sound_events",
    workdir: str | Path | None = None,
    fast: SEAPPipeline | str | Path | None = None,
) -> gr.Blocks:
    """The page over a pipeline (or a saved pipeline folder, loaded here once), with its queue set up."""
    studio = Studio(pipe_or_dir, workdir, fast)
    defaults = SamplingParams()
    player = gr.WaveformOptions(show_recording_waveform=False)  # the browser's own <audio> player
    with gr.Blocks(
        title="SEAP: target-style text-to-audio", analytics_enabled=False, delete_cache=(3600, 86400)
    ) as app:
        gr.Markdown(
            "## SEAP: target-style text-to-audio\nThe prompt says what, the reference says what it sounds like."
        )
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="prompt", placeholder="a dog barking", elem_id="prompt")
                reference = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    label=f"reference (up to {MAX_UPLOAD_SECONDS:.0f} s, {MAX_UPLOAD_BYTES // 2**20} MB)",
                    elem_id="reference",
                )
                with gr.Row():
                    start = gr.Slider(0, MAX_UPLOAD_SECONDS, 0, step=0.01, label="crop start (s)", elem_id="start")
                    length = gr.Slider(0.5, MAX_CROP_SECONDS, 2.0, step=0.01, label="crop length (s)", elem_id="length")
                with gr.Row():
                    own_seconds = float(studio.pipe.config.duration)  # the pipeline's own clip length
                    duration = slider("duration", 0.01, "duration (s)", "duration", own_seconds)
                    steps = slider("steps", 1, "steps", "steps", studio.pipe.default_steps)
                with gr.Row():
                    sampler = gr.Dropdown(studio.samplers, value=studio.own, label="sampler", elem_id="sampler")
                    seed = gr.Number(defaults.seed, precision=0, minimum=0, label="seed", elem_id="seed")
                with gr.Row():
                    g_text = slider("text_guidance", 0.1, "text guidance", "g_text", defaults.guidance)
                    g_style = slider("style_guidance", 0.1, "style guidance", "g_style", defaults.guidance)
                go = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                output = gr.Audio(
                    type="filepath", label="output", interactive=False, waveform_options=player, elem_id="output"
                )
                mel = gr.Image(type="filepath", label="log-mel", show_label=False, interactive=False, elem_id="mel")
                download = gr.File(label="download", interactive=False, elem_id="download")
                command = gr.Textbox(
                    label="reproduce with", interactive=False, lines=2, buttons=["copy"], elem_id="command"
                )
                compare = gr.Button("Compare without the reference", elem_id="compare")
                compare_status = gr.Markdown(elem_id="compare_status")
                text_only = gr.Audio(
                    type="filepath", label="text only", interactive=False, waveform_options=player, elem_id="text_only"
                )
                text_mel = gr.Image(
                    type="filepath", label="log-mel", show_label=False, interactive=False, elem_id="text_mel"
                )
                text_command = gr.Textbox(
                    label="reproduce the text-only clip with", interactive=False, lines=2, elem_id="text_command"
                )
        examples = corpus_examples(examples_dir)
        if examples:
            gr.Examples(
                examples,
                [reference, prompt],
                label="Examples from the shipped corpus (click one, then Generate)",
                cache_examples=False,
            )
        last = gr.State(None)
        go.click(
            studio.generate,
            [prompt, reference, start, length, duration, steps, sampler, g_text, g_style, seed],
            [output, mel, download, command, status, last, text_only, text_mel, text_command],
            concurrency_id="pipeline",
        )
        sampler.change(studio.default_steps, [sampler], [steps])
        compare.click(
            studio.compare, [last], [text_only, text_mel, text_command, compare_status], concurrency_id="pipeline"
        )
    app.queue(default_concurrency_limit=1, max_size=64)
    app.studio = studio
    return app


def launch(
    app: gr.Blocks,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    examples_dir=None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
):
    """Serve ``app``; ``block=False`` returns at once (tests). An upload over ``max_upload_bytes`` is refused."""
    allowed = [str(Path(examples_dir).resolve())] if examples_dir else None
    return app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        ssr_mode=False,
        show_error=False,
        quiet=not block,
        max_file_size=max_upload_bytes,
        allowed_paths=allowed,
    )


def serve(
    pipeline: str | Path,
    host: str = "127.0.0.1",
    port: int = 7860,
    examples_dir="data/sound_events",
    fast: str | Path | None = None,
) -> None:
    """``seap serve``: load the pipeline (and the distilled one, when ``fast`` holds one), then serve the page
    until interrupted."""
    if fast is not None and not (Path(fast) / "model_index.json").is_file():
        log.info("no distilled pipeline in %s: the sampler menu offers the pipeline's own samplers", fast)
        fast = None
    launch(build_app(pipeline, examples_dir, fast=fast), host, port, block=True, examples_dir=examples_dir)
