"""Training the learned vocoder's magnitude network on random crops of the training audio.

The loss is the one Tacotron-style magnitude predictors and neural-vocoder STFT losses use: L1 between log
magnitudes (every bin counts, quiet ones too) plus spectral convergence (the loud bins, relative to the
clip's energy). Targets are computed from the waveform each step (an STFT of a batch of crops costs far
less than the network), so nothing is cached to disk.
"""

from __future__ import annotations

import logging
import math

import torch
from diffusers.optimization import get_cosine_schedule_with_warmup

from seap_model.audio import LogMel, MelSettings
from seap_model.config import VocoderParams
from seap_model.models.vocoder import LearnedVocoder
from seap_model.progress import progress

log = logging.getLogger(__name__)


class MagnitudeLoss(torch.nn.Module):
    """L1 on log magnitude + spectral convergence ||M - P||_F / ||M||_F, averaged over the batch."""

    def __init__(self, log_floor: float):
        super().__init__()
        self.log_floor = log_floor

    def forward(self, log_pred: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        log_l1 = (log_pred - magnitude.clamp_min(self.log_floor).log()).abs().mean()
        # Over the whole batch, not per crop: a near-silent crop would divide by almost nothing.
        convergence = (magnitude - log_pred.exp()).norm() / magnitude.norm().clamp_min(self.log_floor)
        return log_l1 + convergence


class MultiResolutionSTFTLoss(torch.nn.Module):
    """Log-magnitude L1 + spectral convergence at several STFT resolutions (Parallel WaveGAN's loss), between a
    reconstructed and the original waveform; the resolutions include YAMNet's (400-sample window, hop 160)."""

    RESOLUTIONS = ((256, 64), (400, 160), (512, 128), (1024, 256), (2048, 512))

    def __init__(self, log_floor: float):
        super().__init__()
        self.magnitude = MagnitudeLoss(log_floor)

    def forward(self, wave: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = wave.new_zeros(())
        for n_fft, hop in self.RESOLUTIONS:
            window = torch.hann_window(n_fft, device=wave.device)
            spec = torch.stft(wave, n_fft, hop, window=window, return_complex=True).abs()
            ref = torch.stft(target, n_fft, hop, window=window, return_complex=True).abs()
            total = total + self.magnitude(spec.clamp_min(self.magnitude.log_floor).log(), ref)
        return total / len(self.RESOLUTIONS)


class CropSampler:
    """Seeded random fixed-length crops from a list of waveforms (shorter ones zero-padded)."""

    def __init__(self, waves: list[torch.Tensor], samples: int, seed: int):
        if not waves:
            raise ValueError("no training audio for the vocoder")
        self.waves, self.samples = waves, samples
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, batch_size: int) -> torch.Tensor:
        out = torch.zeros(batch_size, self.samples)
        for row, i in enumerate(torch.randint(len(self.waves), (batch_size,), generator=self.gen).tolist()):
            w = self.waves[i]
            start = int(torch.randint(max(1, w.numel() - self.samples + 1), (1,), generator=self.gen))
            piece = w[start : start + self.samples]
            out[row, : piece.numel()] = piece
        return out


def magnitude(wave: torch.Tensor, settings: MelSettings) -> torch.Tensor:
    """|STFT| with the analysis window and hop the log-mel uses: (B, n_fft // 2 + 1, frames)."""
    window = torch.hann_window(settings.n_fft, device=wave.device)
    return torch.stft(wave, settings.n_fft, settings.hop_length, window=window, return_complex=True).abs()


def train_vocoder(
    vocoder: LearnedVocoder, waves: list[torch.Tensor], settings: MelSettings, params: VocoderParams, seed: int
) -> list[float]:
    """Fit the normalisation, then train the magnitude network for ``params.steps`` steps; the loss per step."""
    torch.manual_seed(seed)
    logmel = LogMel(settings)
    with torch.no_grad():
        vocoder.fit_normalisation([logmel(w) for w in waves])
    sample = CropSampler(waves, int(round(params.crop_seconds * settings.sample_rate)), seed)
    loss_fn, wave_loss = MagnitudeLoss(vocoder.config.log_floor), MultiResolutionSTFTLoss(vocoder.config.log_floor)
    opt = torch.optim.AdamW(vocoder.parameters(), lr=params.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(opt, max(1, params.steps // 20), params.steps)
    losses: list[float] = []
    vocoder.train()
    for step in progress(range(params.steps), desc="pretrain-vocoder", unit="step"):
        x = sample(params.batch_size)
        with torch.no_grad():
            target, mel = magnitude(x, settings), logmel(x)
        log_pred = vocoder.log_magnitude(mel)
        loss = loss_fn(log_pred, target)
        if step >= params.steps - params.unrolled_steps:
            # The last steps train through Griffin-Lim itself (the GriffinLim module is differentiable): the network
            # learns magnitudes Griffin-Lim turns into the right audio, not only magnitudes close to the true ones.
            loss = loss + wave_loss(vocoder.griffin_lim(log_pred.exp()), x)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"vocoder training diverged at step {step} (loss {loss.item()}); lower vocoder.lr")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vocoder.parameters(), 1.0)
        opt.step()
        schedule.step()
        losses.append(loss.item())
        if step % max(1, params.steps // 10) == 0:
            log.info("pretrain-vocoder step %d/%d loss %.4f", step, params.steps, losses[-1])
    vocoder.eval()
    return losses
