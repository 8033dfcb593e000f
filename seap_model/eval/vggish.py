"""VGGish (Hershey et al. 2017), the AudioSet embedding behind FAD (Kilgour et al. 2019), as an evaluator.

Loads the published PyTorch port's files (harritaylor/torchvggish release v0.1) from local paths with
``torch.load(weights_only=True)``; nothing is downloaded. ``vggish-10086976.pth`` is a plain state dict in
torchvggish's layout, which ``VGGish`` keeps: ``features.{0,3,6,8,11,13}`` are the 3x3 convolutions of the VGG
stack ``[64, M, 128, M, 256, 256, M, 512, 512, M]`` (ReLU after each, 2x2 max pools), ``embeddings.{0,2,4}`` the
linears 512*4*6 -> 4096 -> 4096 -> 128 with a ReLU after each, the last one included, as torchvggish has it
(``final_relu=False`` drops that last one, as TF's current vggish_slim, whose fc2 has no activation, and the FAD
tools' defaults do; it has no weights, so the file is the same). The optional ``vggish_pca_params-970ea276.pth``
holds ``pca_eigen_vectors`` [128, 128] and ``pca_means`` ([128] or [128, 1]); torchvggish converts them with
``torch.as_tensor`` on loading, as for NumPy arrays, so NumPy's plain array reconstruction (and nothing else) is
allowed into the weights-only unpickler, for these loads alone. With it, each 128-d embedding is postprocessed like
AudioSet's released features: PCA (with whitening), clipped to [-2, 2], quantised to 8 bits, then mapped back to
floats on that grid (torchvggish returns the 0..255 codes themselves: the same values up to the affine map
code * 4/255 - 2, which scales a Frechet distance by (4/255)**2). The FAD tools (frechet_audio_distance, fadtk)
use the raw embedding by default, i.e. no PCA file.

The front end is VGGish's documented one (tensorflow/models research/audioset/vggish, whose numpy code
torchvggish carries): mono 16 kHz, 25 ms (400-sample) periodic-Hann frames every 10 ms with no centring,
512-point FFT magnitude, 64 HTK mel bands 125-7500 Hz with the triangles drawn in mel as that code draws them
(torchaudio's HTK filterbank draws them in Hz; weights differ by < 0.005), log(mel + 0.01), then
non-overlapping examples of 96 frames x 64 bands (0.96 s). Resampling is ``seap_model.audio.resample``
(torchaudio's windowed sinc) where torchvggish uses resampy.

Written here because torchvggish is not packaged: its hub entry point downloads both files and its input code
needs resampy; the network itself is a plain conv stack.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seap_model.audio import AudioError, resample

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 64
MEL_MIN_HZ, MEL_MAX_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s, and the hop between examples (no overlap)
EXAMPLE_SAMPLES = WINDOW + (EXAMPLE_FRAMES - 1) * HOP  # 15600: what one whole example needs (0.975 s)
LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
HIDDEN = 4096
EMBEDDING = 128
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0
BATCH = 64  # examples per forward pass


class VGGish(nn.Module):
    """Log-mel examples [B, 1, 96, 64] -> embeddings [B, 128] (postprocessed when PCA parameters are set).

    ``state_dict()`` has exactly the published checkpoint's keys; the PCA parameters are non-persistent buffers.
    """

    def __init__(self, final_relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for layer in LAYERS:
            if layer == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, layer, 3, padding=1), nn.ReLU()]
                channels = layer
        self.features = nn.Sequential(*layers)
        pools = LAYERS.count("M")
        flat = channels * (EXAMPLE_FRAMES >> pools) * (N_MELS >> pools)  # 512 * 6 * 4
        self.embeddings = nn.Sequential(
            *(nn.Linear(flat, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU()),
            *(nn.Linear(HIDDEN, EMBEDDING), nn.ReLU() if final_relu else nn.Identity()),  # as torchvggish: ReLU
        )
        self.register_buffer("pca_eigen_vectors", None, persistent=False)
        self.register_buffer("pca_means", None, persistent=False)

    @property
    def postprocess(self) -> bool:
        """Whether embeddings go through AudioSet's PCA, clipping and 8-bit quantisation."""
        return self.pca_eigen_vectors is not None

    def set_pca(self, eigen_vectors: torch.Tensor | None, means: torch.Tensor | None = None) -> None:
        """Turn postprocessing on with these parameters ([128, 128] and [128] or [128, 1]), or off with None."""
        if eigen_vectors is None:
            self.pca_eigen_vectors = self.pca_means = None
            return
        if means is None:
            raise ValueError("PCA postprocessing needs pca_means as well as pca_eigen_vectors")
        self.pca_eigen_vectors = eigen_vectors.float().reshape(EMBEDDING, EMBEDDING)
        self.pca_means = means.float().reshape(EMBEDDING)

    def postprocess_embeddings(self, raw: torch.Tensor) -> torch.Tensor:
        """[B, 128] raw -> PCA, clipped to [-2, 2], quantised to 256 levels, back on the float grid."""
        x = (raw - self.pca_means) @ self.pca_eigen_vectors.T
        step = (QUANTIZE_MAX - QUANTIZE_MIN) / 255.0
        codes = torch.round((x.clamp(QUANTIZE_MIN, QUANTIZE_MAX) - QUANTIZE_MIN) / step)  # uint8 values 0..255
        return codes * step + QUANTIZE_MIN

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = self.features(examples)  # [B, 512, 6, 4]
        x = self.embeddings(x.permute(0, 2, 3, 1).flatten(1))  # flattened (time, band, channel) as TF's NHWC
        return self.postprocess_embeddings(x) if self.postprocess else x


@functools.cache
def mel_matrix() -> torch.Tensor:
    """[257, 64] float64 weights from FFT magnitude bins to VGGish's HTK mel bands (triangles in mel, DC zero)."""

    def mel(hz: torch.Tensor) -> torch.Tensor:
        return 1127.0 * torch.log1p(hz / 700.0)

    bins = mel(torch.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1, dtype=torch.float64))[:, None]
    edges = torch.linspace(*mel(torch.tensor([MEL_MIN_HZ, MEL_MAX_HZ], dtype=torch.float64)), N_MELS + 2)
    low, centre, high = edges[:-2], edges[1:-1], edges[2:]
    weights = torch.minimum((bins - low) / (centre - low), (high - bins) / (high - centre)).clamp(min=0.0)
    weights[0] = 0.0
    return weights


@functools.cache
def _window() -> torch.Tensor:
    return torch.hann_window(WINDOW, periodic=True, dtype=torch.float64)


def log_mel_examples(wave: torch.Tensor) -> torch.Tensor:
    """Mono 16 kHz waveform [samples] -> VGGish inputs [N, 1, 96, 64] (float32).

    Padding rule: a clip shorter than one whole example (15600 samples, 0.975 s: 96 frames every 10 ms plus
    the 25 ms window's tail, since frames are not centred) is zero-padded at the end to that length, so it gives
    one example; a longer clip gives its whole 0.96 s examples and drops the rest, as VGGish does.
    """
    wave = wave.to(torch.float64).reshape(-1)
    if wave.numel() < EXAMPLE_SAMPLES:
        wave = nn.functional.pad(wave, (0, EXAMPLE_SAMPLES - wave.numel()))
    frames = wave.unfold(0, WINDOW, HOP) * _window()  # [T, 400]
    magnitude = torch.fft.rfft(frames, n=N_FFT).abs()  # [T, 257]
    log_mel = torch.log(magnitude @ mel_matrix() + LOG_OFFSET)
    count = log_mel.shape[0] // EXAMPLE_FRAMES
    return log_mel[: count * EXAMPLE_FRAMES].reshape(count, 1, EXAMPLE_FRAMES, N_MELS).float()


def _numpy_array_globals() -> list[tuple[object, str]]:
    """What unpickling a plain NumPy array needs, under the names NumPy 1.x and 2.x write (data only: an object
    array would still need its objects' own classes, which stay refused)."""
    core = np._core if hasattr(np, "_core") else np.core
    dtypes = [np.dtype(kind) for kind in ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")]
    return [
        (core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (core.multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
        (np.ndarray, "numpy.ndarray"),
        (np.dtype, "numpy.dtype"),
        *((type(d), f"numpy.dtypes.{type(d).__name__}") for d in dtypes),
    ]


def _load_tensors(path: Path, expected: Mapping[str, tuple[int, ...]], what: str, hint: str) -> dict[str, torch.Tensor]:
    """A plain {name: tensor or NumPy array} file with exactly ``expected``'s names and shapes, as float32
    tensors; an error names the file and the key that does not fit."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} ({hint})")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(f"{path}: cannot be read as a state dict with torch.load(weights_only=True): {exc}") from exc
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a plain state dict ({what}), got {type(state).__name__}")
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: not a {what} (missing {missing}, unexpected {unexpected})")
    tensors = {}
    for name, value in state.items():
        tensor = torch.as_tensor(value) if isinstance(value, torch.Tensor | np.ndarray) else None
        if tensor is None or not tensor.is_floating_point():
            raise ValueError(f"{path}: {name} is {type(value).__name__}, not a floating-point tensor or array")
        if name == "pca_means" and tuple(tensor.shape) == (EMBEDDING, 1):
            tensor = tensor.reshape(EMBEDDING)  # torchvggish's own column layout
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, {what} needs {expected[name]}")
        tensor = tensor.float()
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{path}: {name} contains NaN or infinite values")
        tensors[name] = tensor
    return tensors


def load_pca(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(pca_eigen_vectors [128, 128], pca_means [128]) from the published PCA file; errors name file and key."""
    shapes = {"pca_eigen_vectors": (EMBEDDING, EMBEDDING), "pca_means": (EMBEDDING,)}
    hint = "vggish_pca_params-970ea276.pth from the torchvggish v0.1 release"
    params = _load_tensors(Path(path), shapes, "VGGish PCA file", hint)
    return params["pca_eigen_vectors"], params["pca_means"]


def load_vggish(checkpoint: str | Path, pca: str | Path | None = None, final_relu: bool = True) -> VGGish:
    """VGGish from the published torchvggish files (``pca`` turns postprocessing on); errors name file and key."""
    with torch.device("meta"):  # no random init of 72M weights that the file replaces
        model = VGGish(final_relu)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    hint = "vggish-10086976.pth from the torchvggish v0.1 release"
    model.load_state_dict(_load_tensors(Path(checkpoint), expected, "VGGish checkpoint", hint), assign=True)
    if pca is not None:
        model.set_pca(*load_pca(pca))
    return model.eval().requires_grad_(False)


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return "sha256-" + hashlib.file_digest(f, "sha256").hexdigest()[:16]


class VGGishEvaluator:
    """VGGish 128-d embeddings per clip (any rate, resampled to 16 kHz): the mean over its 0.96 s examples.

    Embeddings only, for FAD: VGGish has no classifier, so ``posteriors`` raises NotImplementedError.
    """

    name = "vggish"
    sample_rate = SAMPLE_RATE

    def __init__(self, checkpoint: str | Path, pca: str | Path | None = None, final_relu: bool = True):
        self.model = load_vggish(checkpoint, pca, final_relu)
        self.postprocess = self.model.postprocess
        self.version = _digest(Path(checkpoint)) + ("" if final_relu else "-norelu")
        self.version += f"+pca-{_digest(Path(pca))}" if pca is not None else ""

    def _mono(self, wave, sample_rate: int, clip_id: str | None) -> torch.Tensor:
        label = "clip" if clip_id is None else f"clip {clip_id}"
        wave = torch.as_tensor(wave).detach().float().cpu()
        if wave.dim() == 2 and wave.shape[0] <= 8 < wave.shape[1]:
            wave = wave.mean(dim=0)  # (channels, samples) -> mono
        if wave.dim() != 1:
            raise AudioError(f"{label}: expected a waveform (samples,) or (channels, samples), got {tuple(wave.shape)}")
        if wave.numel() == 0:
            raise AudioError(f"{label}: waveform is empty")
        if not torch.isfinite(wave).all():
            raise AudioError(f"{label}: waveform contains NaN or infinite samples")
        return resample(wave, sample_rate, self.sample_rate)

    @torch.no_grad()
    def examples(self, wave, sample_rate: int, clip_id: str | None = None) -> np.ndarray:
        """Embeddings [N, 128] float32 of the clip's 0.96 s examples (a clip under 0.975 s is padded to one)."""
        inputs = log_mel_examples(self._mono(wave, sample_rate, clip_id))
        rows = [self.model(inputs[i : i + BATCH]) for i in range(0, inputs.shape[0], BATCH)]
        return torch.cat(rows).numpy().astype(np.float32)

    def embedding(self, wave, sample_rate: int, clip_id: str | None = None) -> np.ndarray:
        """[128] float32: the mean of ``examples`` (postprocessed examples when PCA is on, then averaged)."""
        return self.examples(wave, sample_rate, clip_id).mean(axis=0).astype(np.float32)

    def posteriors(self, wave, sample_rate: int, clip_id: str | None = None) -> np.ndarray:
        raise NotImplementedError(
            "VGGish has no classifier: it gives 128-d embeddings only (for FAD); use yamnet or panns for posteriors"
        )
