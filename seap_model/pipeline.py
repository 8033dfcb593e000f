"""SEAPPipeline: text prompt + sound-event reference -> audio, in diffusers' pipeline layout.

``save_pretrained`` writes one folder per component (safetensors + JSON config) and ``model_index.json``;
``SEAPPipeline.from_pretrained(dir)`` loads it back. The scheduler is swappable with ``from_config``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seap_model.audio import MelSettings, resample

# Component classes are imported here so that from_pretrained finds them by the module names in model_index.json.
from seap_model.models.adapter import StyleAdapter
from seap_model.models.codec import KLCodec, MelPatchCodec
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.text_encoder import encode_text
from seap_model.models.vocoder import GriffinLimVocoder, HiFiGANVocoder
from seap_model.models.yamnet_encoder import YAMNetEncoder


@dataclass
class SEAPOutput(BaseOutput):
    """Generated waveforms (B, samples) at ``sample_rate``."""

    audios: np.ndarray
    sample_rate: int


class SEAPPipeline(DiffusionPipeline):
    """Target-style text-to-audio: the prompt says what, the reference says what it sounds like."""

    _optional_components = ["adapter"]
    model_cpu_offload_seq = "text_encoder->reference_encoder->adapter->unet->codec->vocoder"

    def __init__(
        self,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        text_encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        reference_encoder: ReferenceEncoder | YAMNetEncoder,
        adapter: StyleAdapter | None,
        codec: MelPatchCodec | KLCodec,
        vocoder: GriffinLimVocoder | HiFiGANVocoder,
        max_text_length: int = 32,
    ):
        super().__init__()
        self.register_modules(
            unet=unet,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            reference_encoder=reference_encoder,
            adapter=adapter,
            codec=codec,
            vocoder=vocoder,
        )
        self.register_to_config(max_text_length=max_text_length)

    @property
    def sample_rate(self) -> int:
        return int(self.vocoder.config.sample_rate)

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

    @torch.no_grad()
    def encode_reference(self, references: list[torch.Tensor], sample_rate: int) -> torch.Tensor:
        """Reference embeddings (B, D) from mono waveforms at ``sample_rate`` (any length >= 0.5 s)."""
        target_sr = int(self.reference_encoder.config.sample_rate)
        waves = [
            resample(torch.as_tensor(r, dtype=torch.float32).reshape(-1), sample_rate, target_sr) for r in references
        ]
        length = max(w.numel() for w in waves)
        if any(w.numel() != length for w in waves):
            # Different lengths: embed one by one (the encoder is batch-size invariant in eval mode).
            return torch.cat([self.reference_encoder(w[None].to(self.device)) for w in waves])
        return self.reference_encoder(torch.stack(waves).to(self.device))

    def style(self, tokens: torch.Tensor, mask: torch.Tensor, ref_emb: torch.Tensor | None) -> torch.Tensor | None:
        """Style vectors; ``ref_emb=None`` means the reference is dropped (zero style); None without an adapter."""
        if self.adapter is None:
            return None
        if ref_emb is None:
            ref_emb = torch.zeros(tokens.shape[0], self.adapter.config.reference_dim, device=tokens.device)
            keep = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
            return self.adapter(tokens, mask, ref_emb, keep)
        return self.adapter(tokens, mask, ref_emb.to(tokens.dtype))

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        reference: torch.Tensor | np.ndarray | list | None = None,
        reference_sample_rate: int | None = None,
        duration: float = 2.08,
        num_inference_steps: int = 25,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        progress: bool = True,
    ) -> SEAPOutput:
        """Generate one clip per prompt.

        reference: one mono waveform per prompt (or one shared by all), at ``reference_sample_rate``
        (default: the pipeline's rate). ``None`` runs the same model with the reference dropped.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("no prompt given")
        batch = len(prompts)
        tokens, mask = self.encode_prompt(prompts)
        ref_emb = None
        if reference is not None:
            refs = list(reference) if isinstance(reference, list) else [reference]
            if len(refs) == 1:
                refs = refs * batch
            if len(refs) != batch:
                raise ValueError(f"{len(refs)} references for {batch} prompts")
            ref_emb = self.encode_reference(refs, reference_sample_rate or self.sample_rate)
        style = self.style(tokens, mask, ref_emb)

        do_cfg = guidance_scale > 1.0
        if do_cfg:
            null_tokens, null_mask = encode_text(
                self.tokenizer, self.text_encoder, [""] * batch, self.config.max_text_length
            )
            null_style = self.style(null_tokens, null_mask, None)
            tokens = torch.cat([null_tokens, tokens])
            mask = torch.cat([null_mask, mask])
            style = torch.cat([null_style, style]) if style is not None else None

        frames = self.latent_frames(duration)
        shape = self.codec.latent_shape(frames)
        if isinstance(generator, list):  # one generator per prompt: each clip independent of its batch
            if len(generator) != batch:
                raise ValueError(f"{len(generator)} generators for {batch} prompts")
            latents = torch.stack([torch.randn(shape, generator=g) for g in generator])
        else:
            latents = torch.randn((batch, *shape), generator=generator)
        latents = latents.to(self.device)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = latents * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps) if progress else self.scheduler.timesteps:
            model_in = torch.cat([latents] * 2) if do_cfg else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            pred = self.unet(
                model_in, t, encoder_hidden_states=tokens, encoder_attention_mask=mask, class_labels=style
            ).sample
            if do_cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(pred, t, latents).prev_sample
        if not torch.isfinite(latents).all():
            raise FloatingPointError("sampling diverged: latents contain NaN/inf (check the scheduler settings)")
        logmel = self.codec.decode(latents)
        audio = self.vocoder(logmel)
        return SEAPOutput(audios=audio.cpu().float().numpy(), sample_rate=self.sample_rate)
