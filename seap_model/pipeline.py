"""SEAPPipeline: text prompt + sound-event reference -> audio, in diffusers' pipeline layout.

``save_pretrained`` writes one folder per component (safetensors + JSON config) and ``model_index.json``;
``SEAPPipeline.from_pretrained(dir)`` loads it back. The scheduler is swappable with ``from_config``.
"""

from __future__ import annotations

import inspect
import pickle
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from safetensors import SafetensorError
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seap_model.audio import MelSettings, resample
from seap_model.config import DEFAULT_CLIP_SECONDS, DEFAULT_SAMPLING_STEPS
from seap_model.errors import SeapError

# The component classes among these are imported here so that from_pretrained finds them by model_index.json.
from seap_model.models.adapter import StyleAdapter
from seap_model.models.codec import KLCodec, MelPatchCodec
from seap_model.models.conditioning import Condition, Reference
from seap_model.models.reference_attention import ReferenceAttention
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.text_encoder import encode_text
from seap_model.models.unet import guidance_embedding
from seap_model.models.vocoder import GriffinLimVocoder, HiFiGANVocoder, LearnedVocoder
from seap_model.models.yamnet_encoder import YAMNetEncoder
from seap_model.precision import AUTOCAST, sampling_precision


class PipelineError(SeapError):
    """A pipeline folder whose files cannot be loaded as a saved SEAPPipeline."""


@dataclass
class SEAPOutput(BaseOutput):
    """Generated waveforms (B, samples) at ``sample_rate``."""

    audios: np.ndarray
    sample_rate: int


class SEAPPipeline(DiffusionPipeline):
    """Target-style text-to-audio: the prompt says what, the reference says what it sounds like."""

    _optional_components = ["adapter", "reference_attention"]
    model_cpu_offload_seq = "text_encoder->reference_encoder->adapter->reference_attention->unet->codec->vocoder"

    @classmethod
    def from_pretrained(cls, folder, **kwargs) -> SEAPPipeline:
        """A saved pipeline, from safetensors only (a pickled ``.bin`` is refused, never loaded); PipelineError
        naming the folder and the file when a component cannot be read."""
        try:
            return super().from_pretrained(folder, use_safetensors=True, **kwargs)
        except (OSError, ValueError, SafetensorError, pickle.UnpicklingError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PipelineError(f"{folder}: not a saved pipeline seap can load ({reason})") from None

    def __init__(
        self,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        text_encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        reference_encoder: ReferenceEncoder | YAMNetEncoder,
        adapter: StyleAdapter | None,
        codec: MelPatchCodec | KLCodec,
        vocoder: LearnedVocoder | GriffinLimVocoder | HiFiGANVocoder,
        max_text_length: int = 32,
        reference_attention: ReferenceAttention | None = None,
        duration: float = DEFAULT_CLIP_SECONDS,
        default_steps: int = DEFAULT_SAMPLING_STEPS,
        distilled_guidance: list[list[float]] | None = None,
    ):
        super().__init__()
        # transformers records whether the tokenizer was loaded offline (``local_files_only``) in the config it
        # saves, so the same pipeline saved on an offline and an online machine would hash differently (DVC).
        tokenizer.init_kwargs.pop("local_files_only", None)
        self.register_modules(
            unet=unet,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            reference_encoder=reference_encoder,
            adapter=adapter,
            reference_attention=reference_attention,
            codec=codec,
            vocoder=vocoder,
        )
        # The clip length it was trained on, its default ``duration``; a pipeline saved before this was recorded
        # loads with DEFAULT_CLIP_SECONDS, the length every pipeline was trained on then. ``default_steps``: its
        # own step count (a teacher's from the measured curve, a distilled model's its few). ``distilled_guidance``:
        # for a distilled model, the [low, high] ranges of the text and style scales its U-Net was distilled over
        # (it takes them as an input and is called once per step); None for a model guided by several calls.
        self.register_to_config(
            max_text_length=max_text_length,
            duration=float(duration),
            default_steps=int(default_steps),
            distilled_guidance=distilled_guidance,
        )

    @property
    def sample_rate(self) -> int:
        return int(self.vocoder.config.sample_rate)

    @property
    def default_steps(self) -> int:
        return int(self.config.default_steps)

    @property
    def mel_settings(self) -> MelSettings:
        c = self.vocoder.config
        return MelSettings(c.sample_rate, c.n_fft, c.hop_length, c.n_mels, c.f_min, c.f_max)

    def latent_frames(self, duration: float) -> int:
        """Mel frames generated for ``duration`` seconds (rounded down to what the codec and U-Net accept)."""
        frames = self.mel_settings.frames(duration)
        frames -= frames % self.codec.frame_multiple
        if frames <= 0:
            raise ValueError(
                f"duration {duration} s is too short: at least {self.codec.frame_multiple} mel frames are needed"
            )
        return frames

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompt {i} is empty")
        return encode_text(self.tokenizer, self.text_encoder, prompts, self.config.max_text_length)

    @property
    def reference_form(self) -> str:
        """``pooled`` (one embedding per reference) or ``frames`` (the encoder's sequence before pooling)."""
        for part in (self.adapter, self.reference_attention):
            if part is not None:
                return part.config.reference
        return "pooled"

    @torch.no_grad()
    def encode_reference(self, references: list[torch.Tensor], sample_rate: int) -> torch.Tensor:
        """Reference embeddings (B, D) from mono waveforms at ``sample_rate`` (any length >= 0.5 s)."""
        return self._encode(references, sample_rate, self.reference_encoder)

    @torch.no_grad()
    def encode_reference_frames(
        self, references: list[torch.Tensor], sample_rate: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame sequences (B, T, F), zero-padded to the longest, and their mask (B, T), False on padding."""
        rows = self._encode(references, sample_rate, self.reference_encoder.frames, stack=False)
        length = max(r.shape[0] for r in rows)
        frames = torch.zeros(len(rows), length, rows[0].shape[-1], device=rows[0].device)
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=rows[0].device)
        for i, r in enumerate(rows):
            frames[i, : r.shape[0]], mask[i, : r.shape[0]] = r, True
        return frames, mask

    def _encode(self, references, sample_rate: int, encode, stack: bool = True):
        target_sr = int(self.reference_encoder.config.sample_rate)
        waves = [
            resample(torch.as_tensor(r, dtype=torch.float32).reshape(-1), sample_rate, target_sr) for r in references
        ]
        length = max(w.numel() for w in waves)
        if any(w.numel() != length for w in waves):
            # Different lengths: embed one by one (the encoder is batch-size invariant in eval mode).
            rows = [encode(w[None].to(self.device)) for w in waves]
            return torch.cat(rows) if stack else [r[0] for r in rows]
        out = encode(torch.stack(waves).to(self.device))
        return out if stack else list(out)

    def condition(self, tokens: torch.Tensor, mask: torch.Tensor, reference: Reference | None) -> Condition:
        """The U-Net's inputs for one branch: text tokens, the style vector (adapter) and the reference tokens
        (reference attention); ``reference=None`` is the dropped reference (zero style, zero tokens)."""
        part = self.adapter if self.adapter is not None else self.reference_attention
        if part is None:
            return Condition(tokens, mask, None, None)
        b = tokens.shape[0]
        dropped = torch.zeros(b, dtype=torch.bool, device=tokens.device)
        if reference is None:
            width = part.config.reference_dim
            shape = (b, width) if self.reference_form == "pooled" else (b, 1, width)
            values, frame_mask, keep = torch.zeros(shape, device=tokens.device), None, dropped
        else:
            values, frame_mask, keep = reference.values.to(tokens.dtype), reference.mask, None
        style = ref_tokens = None
        if self.adapter is not None:
            style = self.adapter(tokens, mask, values, keep, frame_mask)
        if self.reference_attention is not None:
            ref_tokens = self.reference_attention.tokens(values, keep if frame_mask is None else frame_mask)
        return Condition(tokens, mask, style, ref_tokens)

    def guided_noise(
        self, latents: torch.Tensor, t, branches: list[Condition], scales: list[float], batched: bool = True
    ) -> torch.Tensor:
        """Guidance over a chain of branches: e[0] + sum_i scales[i-1] * (e[i] - e[i-1]).

        With branches (no text, no reference), (text), (text + reference) and scales (g_t, g_s) that is
        e(null) + g_t (e(text) - e(null)) + g_s (e(text, ref) - e(text)). ``batched``: every branch in one U-Net
        call (otherwise one call each; the same numbers up to float rounding)."""
        if batched:
            joined = Condition.join(branches)
            model_in = self.scheduler.scale_model_input(torch.cat([latents] * len(branches)), t)
            preds = self._unet(model_in, t, joined).chunk(len(branches))
        else:
            model_in = self.scheduler.scale_model_input(latents, t)
            preds = [self._unet(model_in, t, c) for c in branches]
        pred = preds[0]
        for i, scale in enumerate(scales, start=1):
            pred = pred + scale * (preds[i] - preds[i - 1])
        return pred

    def _unet(self, model_in: torch.Tensor, t, c: Condition) -> torch.Tensor:
        context = c.tokens if c.reference_tokens is None else (c.tokens, [c.reference_tokens])
        return self.unet(
            model_in,
            t,
            encoder_hidden_states=context,
            encoder_attention_mask=c.mask,
            class_labels=c.style,
            timestep_cond=c.guidance,
        ).sample

    @contextmanager
    def griffin_lim_iterations(self, n: int | None):
        """The Griffin-Lim vocoder's iteration count set to ``n`` inside the block (None: unchanged)."""
        if n is None:
            yield
            return
        self._check_vocoder_iterations(n)
        gl = self.vocoder.griffin_lim
        saved, gl.n_iter = gl.n_iter, n
        try:
            yield
        finally:
            gl.n_iter = saved

    def _check_vocoder_iterations(self, n: int) -> None:
        if getattr(self.vocoder, "griffin_lim", None) is None:
            raise ValueError(
                f"vocoder_iterations applies to Griffin-Lim; this vocoder is {type(self.vocoder).__name__}"
            )
        if n <= 0:
            raise ValueError(f"vocoder_iterations must be > 0, got {n}")

    def check_inputs(
        self,
        prompts: list[str],
        guidance: tuple[float | None, ...],
        num_inference_steps: int,
        precision: str = "auto",
        vocoder_iterations: int | None = None,
    ) -> None:
        if vocoder_iterations is not None:
            self._check_vocoder_iterations(vocoder_iterations)
        sampling_precision(precision, self.device)  # ValueError for an unknown one
        if not prompts:
            raise ValueError("no prompt given")
        for name, value in zip(("guidance_scale", "text_guidance_scale", "style_guidance_scale"), guidance):
            if value is not None and not (value >= 0 and np.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if num_inference_steps <= 0:
            raise ValueError(f"num_inference_steps must be > 0, got {num_inference_steps}")

    def _check_distilled(self, g_text: float, g_style: float) -> None:
        """A distilled U-Net knows only the guidance scales it was distilled over."""
        for name, value, (low, high) in zip(("text", "style"), (g_text, g_style), self.config.distilled_guidance):
            if not low <= value <= high:
                raise ValueError(
                    f"{name} guidance {value} is outside [{low}, {high}], the range this distilled pipeline was "
                    "distilled over"
                )

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | list[str],
        reference: torch.Tensor | np.ndarray | list | None = None,
        reference_sample_rate: int | None = None,
        duration: float | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        progress: bool = True,
        text_guidance_scale: float | None = None,
        style_guidance_scale: float | None = None,
        precision: str = "auto",
        batch_guidance: bool = True,
        vocoder_iterations: int | None = None,
    ) -> SEAPOutput:
        """Generate one clip per prompt.

        reference: one mono waveform per prompt (or one shared by all), at ``reference_sample_rate``
        (default: the pipeline's rate). ``None`` runs the same model with the reference dropped.
        duration: seconds of audio (None: the pipeline's own clip length, ``config.duration``).
        guidance_scale: one scale for text and reference together (<= 1: no guidance). text_guidance_scale and
        style_guidance_scale (default: guidance_scale) guide them apart: style 0 ignores the reference, a larger
        style scale asks for "more like my clip" without pushing the text harder.
        num_inference_steps: None: the pipeline's own (``config.default_steps``).
        precision: "bf16"/"fp16" run the U-Net under autocast; latents, the sampler, the codec decode and the
        vocoder stay in fp32 (the mel decode is where half precision would clip or go silent). "auto": bf16
        where the device computes it natively, fp32 elsewhere (``seap_model.precision``).
        batch_guidance: all guidance branches in one U-Net call per step (False: one call per branch, for
        measuring what batching gives; the same audio up to float rounding).
        vocoder_iterations: Griffin-Lim iterations for this call (None: the vocoder's own).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        steps = self.default_steps if num_inference_steps is None else num_inference_steps
        self.check_inputs(
            prompts, (guidance_scale, text_guidance_scale, style_guidance_scale), steps, precision, vocoder_iterations
        )
        batch = len(prompts)
        tokens, mask = self.encode_prompt(prompts)
        ref = None
        if reference is not None:
            refs = list(reference) if isinstance(reference, list) else [reference]
            if len(refs) == 1:
                refs = refs * batch
            if len(refs) != batch:
                raise ValueError(f"{len(refs)} references for {batch} prompts")
            sr = reference_sample_rate or self.sample_rate
            if self.reference_form == "frames":
                ref = Reference(*self.encode_reference_frames(refs, sr))
            else:
                ref = Reference(self.encode_reference(refs, sr), None)
        g_text, g_style = (
            guidance_scale if text_guidance_scale is None else text_guidance_scale,
            guidance_scale if style_guidance_scale is None else style_guidance_scale,
        )
        if text_guidance_scale is None and style_guidance_scale is None and guidance_scale <= 1.0:
            g_text = g_style = 1.0  # one scale <= 1: no guidance, as in diffusers
        styled = ref is not None and (self.adapter is not None or self.reference_attention is not None)
        branches, scales = [self.condition(tokens, mask, ref)], []
        if self.config.distilled_guidance is not None:  # one call per step, the scales are the U-Net's input
            g_style = g_style if styled else 0.0  # no reference: the text-only guidance, as below
            self._check_distilled(g_text, g_style)
            scales_in = torch.tensor([[g_text, g_style]], device=self.device).expand(batch, 2)
            branches[0].guidance = guidance_embedding(scales_in, self.unet.config.time_cond_proj_dim)
            scales = []
        elif (g_text, g_style) != (1.0, 1.0):
            null_tokens, null_mask = encode_text(
                self.tokenizer, self.text_encoder, [""] * batch, self.config.max_text_length
            )
            null = self.condition(null_tokens, null_mask, None)
            if not styled or g_style == 0:  # the reference cannot or should not count: text-only guidance
                branches, scales = [null, self.condition(tokens, mask, None)], [g_text]
            elif g_text == g_style:
                branches, scales = [null, branches[0]], [g_text]
            else:
                branches, scales = [null, self.condition(tokens, mask, None), branches[0]], [g_text, g_style]

        frames = self.latent_frames(self.config.duration if duration is None else duration)
        shape = self.codec.latent_shape(frames)
        if isinstance(generator, list):  # one generator per prompt: each clip independent of its batch
            if len(generator) != batch:
                raise ValueError(f"{len(generator)} generators for {batch} prompts")
            latents = torch.stack([torch.randn(shape, generator=g) for g in generator])
        else:
            latents = torch.randn((batch, *shape), generator=generator)
        latents = latents.to(self.device)
        self.scheduler.set_timesteps(steps, device=self.device)
        latents = latents * self.scheduler.init_noise_sigma
        attached = (
            self.reference_attention.attached(self.unet) if self.reference_attention is not None else nullcontext()
        )
        # Stochastic samplers (DDPM, ...) draw fresh noise every step: from the same per-item generators, so a
        # seed fixes the clip (the global RNG would not) and a clip does not depend on its batch.
        takes_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if takes_generator and generator is not None else {}
        dtype = AUTOCAST[sampling_precision(precision, self.device)]
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()
        with attached:
            for t in self.progress_bar(self.scheduler.timesteps) if progress else self.scheduler.timesteps:
                with autocast:
                    pred = self.guided_noise(latents, t, branches, scales, batch_guidance)
                latents = self.scheduler.step(pred.float(), t, latents, **step_kwargs).prev_sample
        if not torch.isfinite(latents).all():
            raise FloatingPointError("sampling diverged: latents contain NaN/inf (check the scheduler settings)")
        logmel = self.codec.decode(latents)
        with self.griffin_lim_iterations(vocoder_iterations):
            audio = self.vocoder(logmel)
        return SEAPOutput(audios=audio.cpu().float().numpy(), sample_rate=self.sample_rate)
