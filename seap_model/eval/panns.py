"""PANNs CNN14 (Kong et al. 2020), the AudioSet tagger behind the paper's and Tango's FD/KL/IS, as an evaluator.

Loads the published checkpoint file (``Cnn14_16k_mAP=0.438.pth`` or ``Cnn14_mAP=0.431.pth``: a dict whose
``"model"`` is the state dict) with ``torch.load(weights_only=True)`` from a local path; nothing is downloaded.
The module keeps the published layout (``spectrogram_extractor.stft.conv_real``, ``logmel_extractor.melW``,
``bn0``, ``conv_block1..6``, ``fc1``, ``fc_audioset``), so the checkpoint's own STFT kernels and mel matrix are
used and the front end is the original's exactly. Written here because the ``panns_inference`` package
downloads its checkpoint and pulls ``torchlibrosa``; the network itself is a few conv blocks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seap_model.audio import AudioError, resample

# (sample_rate, window, hop, mel bins) of the two published CNN14 checkpoints
FRONT_ENDS = {16000: (512, 160, 64), 32000: (1024, 320, 64)}
WIDTHS = (64, 128, 256, 512, 1024, 2048)
CLASSES = 527


class _STFT(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.conv_real = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)


class _Spectrogram(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.stft = _STFT(n_fft, hop)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:  # [B, samples] -> power [B, 1, T, F]
        x = nn.functional.pad(wave[:, None], (self.stft.n_fft // 2, self.stft.n_fft // 2), mode="reflect")
        real, imag = self.stft.conv_real(x), self.stft.conv_imag(x)
        return (real**2 + imag**2).transpose(1, 2)[:, None]


class _LogMel(nn.Module):
    def __init__(self, n_fft: int, n_mels: int):
        super().__init__()
        self.melW = nn.Parameter(torch.zeros(n_fft // 2 + 1, n_mels), requires_grad=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=1e-10))


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return nn.functional.avg_pool2d(x, pool)


class Cnn14(nn.Module):
    """Waveform [B, samples] at ``sample_rate`` -> (clip posteriors [B, 527], embedding [B, widths[-1]])."""

    def __init__(self, sample_rate: int = 16000, widths: tuple[int, ...] = WIDTHS, classes: int = CLASSES):
        super().__init__()
        if sample_rate not in FRONT_ENDS:
            raise ValueError(f"CNN14 checkpoints exist for {sorted(FRONT_ENDS)} Hz, not {sample_rate}")
        n_fft, hop, n_mels = FRONT_ENDS[sample_rate]
        self.sample_rate = sample_rate
        self.spectrogram_extractor = _Spectrogram(n_fft, hop)
        self.logmel_extractor = _LogMel(n_fft, n_mels)
        self.bn0 = nn.BatchNorm2d(n_mels)
        chans = (1, *widths)
        for i in range(len(widths)):
            self.add_module(f"conv_block{i + 1}", _ConvBlock(chans[i], chans[i + 1]))
        self.fc1 = nn.Linear(widths[-1], widths[-1])
        self.fc_audioset = nn.Linear(widths[-1], classes)
        self.blocks = len(widths)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.logmel_extractor(self.spectrogram_extractor(wave))  # [B, 1, T, mels]
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(self.blocks):
            x = getattr(self, f"conv_block{i + 1}")(x, (2, 2) if i < self.blocks - 1 else (1, 1))
        x = x.mean(dim=3)  # over frequency
        x = x.max(dim=2).values + x.mean(dim=2)  # over time
        embedding = torch.relu(self.fc1(x))
        return torch.sigmoid(self.fc_audioset(embedding)), embedding


def load_cnn14(path: str | Path, sample_rate: int = 16000, widths: tuple[int, ...] = WIDTHS) -> Cnn14:
    """CNN14 from a published checkpoint file; an error names the file and the keys that do not fit."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no PANNs checkpoint (e.g. Cnn14_16k_mAP=0.438.pth from the PANNs release)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    model = Cnn14(sample_rate, widths)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a {sample_rate} Hz CNN14 checkpoint (missing {missing}, unexpected {unexpected})"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            want = tuple(expected[name].shape)
            raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, CNN14 needs {want}")
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


class PANNsEvaluator:
    """CNN14 posteriors [527] and its 2048-d ``fc1`` embedding per clip (resampled to the checkpoint's rate)."""

    name = "panns-cnn14"

    def __init__(self, checkpoint: str | Path, sample_rate: int = 16000, widths: tuple[int, ...] = WIDTHS):
        self.model = load_cnn14(checkpoint, sample_rate, widths)
        self.sample_rate = sample_rate
        with Path(checkpoint).open("rb") as f:
            self.version = "sha256-" + hashlib.file_digest(f, "sha256").hexdigest()[:16]

    @torch.no_grad()
    def _run(self, wave, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        wave = torch.as_tensor(np.asarray(wave, dtype=np.float32)).reshape(-1)
        if wave.numel() == 0 or not torch.isfinite(wave).all():
            raise AudioError("clip is empty or contains NaN or infinite samples")
        wave = resample(wave, sample_rate, self.sample_rate)
        # Padding rule: a clip too short for the five 2x2 poolings (2**(blocks-1) frames, 0.32 s at 16 kHz) is
        # zero-padded at the end to that length.
        need = self.model.spectrogram_extractor.stft.hop * 2 ** (self.model.blocks - 1)
        if wave.numel() < need:
            wave = nn.functional.pad(wave, (0, need - wave.numel()))
        posteriors, embedding = self.model(wave[None])
        return posteriors[0].numpy(), embedding[0].numpy()

    def posteriors(self, wave, sample_rate: int) -> np.ndarray:
        return self._run(wave, sample_rate)[0]

    def embedding(self, wave, sample_rate: int) -> np.ndarray:
        return self._run(wave, sample_rate)[1]
