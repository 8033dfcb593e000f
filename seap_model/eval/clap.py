"""LAION CLAP (Wu et al. 2023; HTSAT audio, RoBERTa text) as an evaluator: embeddings and text-audio scores.

Loads ``transformers``' ``ClapModel`` and ``ClapProcessor`` from a folder written by ``save_pretrained`` (the
published layout: ``config.json``, ``model.safetensors`` or ``pytorch_model.bin``, ``preprocessor_config.json``
or ``processor_config.json``, the tokenizer files) with ``local_files_only=True``, or from a hub id, which is
read from the local cache when ``HF_HUB_OFFLINE=1`` and downloaded otherwise. A path-like source that does not
exist is an error, never a hub lookup.

Audio is resampled explicitly to the feature extractor's ``sampling_rate`` (48 kHz for LAION CLAP) and then
handled as the saved feature extractor says (LAION's published settings):

- clips shorter than ``max_length_s`` (10 s) follow ``padding``: ``"repeatpad"`` (both published checkpoints)
  tiles the clip a whole number of times and zero-pads the rest; ``"repeat"`` tiles and cuts; ``"pad"`` only
  zero-pads;
- clips longer than ``max_length_s`` follow ``truncation``: ``"rand_trunc"`` (``clap-htsat-unfused``) takes one
  random 10 s crop, ``"fusion"`` (``clap-htsat-fused``) stacks three random crops with a shrunk whole clip.
  The crops come from numpy's global random generator, so each clip is featurised under a fixed seed (and the
  generator's state is put back afterwards): the same clip always gives the same embedding.

Each clip is featurised on its own: with ``"fusion"`` the feature extractor marks a random clip of an all-short
batch as "longer", which would make a clip's embedding depend on its batch; alone, every clip is marked so,
which is what ``ClapProcessor`` does for a single clip. CLAP has no class posteriors, so ``posteriors`` raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import transformers
from torch.nn import functional as F

from seap_model.audio import AudioError, resample

# "name" or "owner/name" as the hub spells them; anything else (absolute, ./, ~/, a/b/c) is a local path
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_CONFIGS = ("config.json", "preprocessor_config.json", "processor_config.json")
CROP_SEED = 0  # numpy seed for the feature extractor's random crops of clips longer than max_length_s


def _local_folder(source: str | Path) -> Path | None:
    """The folder ``source`` names, checked; None when ``source`` is a hub id (not an existing path)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: a CLAP source is a folder written by save_pretrained, not a file")
        config = path / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"{path}: no config.json (not a folder written by ClapModel.save_pretrained)")
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"{config}: not a readable model config ({exc})") from None
        if model_type != "clap":
            raise ValueError(f"{config}: model_type is {model_type!r}, a CLAP evaluator needs 'clap'")
        return path
    if isinstance(source, Path) or not _HUB_ID.fullmatch(str(source)):
        raise FileNotFoundError(f"{source}: no such CLAP folder (a folder written by save_pretrained, or a hub id)")
    return None


def _snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder a hub id was loaded from (a cache lookup; nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _digest(folder: Path) -> str:
    """sha256 over the weights file(s) and the model/feature-extractor configs, which together fix the embedding."""
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    digest = hashlib.sha256()
    for path in [*weights, *(folder / name for name in _CONFIGS if (folder / name).is_file())]:
        with path.open("rb") as f:
            digest.update(path.name.encode() + b"\0" + hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global generator (which the feature extractor's crops draw from), then put its state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


class ClapEvaluator:
    """CLAP audio embedding [D] per clip, text embeddings [N, D], and paired text-audio cosine scores [N].

    ``source`` is a local folder written by ``save_pretrained`` or a hub id (``laion/clap-htsat-unfused``);
    ``device`` is where the model runs. Embeddings are L2-normalised ``get_audio_features`` /
    ``get_text_features`` outputs (float32), from the model in eval mode under ``torch.no_grad``.
    """

    name = "clap"

    def __init__(self, source: str | Path, device: str | torch.device = "cpu"):
        folder = _local_folder(source)
        where = str(folder) if folder is not None else str(source)
        try:
            model = transformers.ClapModel.from_pretrained(
                where, local_files_only=folder is not None, dtype=torch.float32
            )
            self.processor = transformers.ClapProcessor.from_pretrained(where, local_files_only=folder is not None)
        except OSError as exc:
            kind = "folder" if folder is not None else "hub id (not a local folder)"
            raise OSError(f"{source}: cannot load a CLAP model and processor from this {kind}: {exc}") from exc
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.feature_extractor = self.processor.feature_extractor
        self.tokenizer = self.processor.tokenizer
        audio = self.model.config.audio_config
        saved = [n for n in _CONFIGS[1:] if folder is not None and (folder / n).is_file()]
        extractor = saved[0] if saved else "the feature extractor config"
        if self.feature_extractor.feature_size != audio.num_mel_bins:
            raise ValueError(
                f"{where}: {extractor} has feature_size {self.feature_extractor.feature_size}, "
                f"config.json audio_config.num_mel_bins is {audio.num_mel_bins}"
            )
        if (self.feature_extractor.truncation == "fusion") != bool(audio.enable_fusion):
            raise ValueError(
                f"{where}: {extractor} has truncation {self.feature_extractor.truncation!r} but config.json "
                f"audio_config.enable_fusion is {audio.enable_fusion} ('fusion' goes with a fused model only)"
            )
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.padding = str(self.feature_extractor.padding)
        self.truncation = str(self.feature_extractor.truncation)
        self.max_length_s = float(self.feature_extractor.max_length_s)
        self.dim = int(self.model.config.projection_dim)
        text = self.model.config.text_config
        # RoBERTa positions start after the padding index, so max_position_embeddings - pad - 1 tokens fit
        self._max_tokens = min(
            int(self.tokenizer.model_max_length), text.max_position_embeddings - (text.pad_token_id or 0) - 1
        )
        # the folder name, not its path (moving the folder keeps caches valid); the digest names the content
        snapshot = folder if folder is not None else _snapshot(str(source))
        label = folder.name if folder is not None else str(source)
        self.version = f"{label}-transformers-{transformers.__version__}"
        if snapshot is not None:
            self.version += f"-sha256-{_digest(snapshot)}"

    def _wave(self, wave, sample_rate: int, clip_id: str) -> np.ndarray:
        if isinstance(wave, torch.Tensor):
            wave = wave.detach().cpu().numpy()
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim > 1:
            wave = wave.squeeze()
        if wave.ndim != 1:
            raise AudioError(f"{clip_id}: a CLAP clip is one mono waveform, got shape {tuple(wave.shape)}")
        if wave.size == 0:
            raise AudioError(f"{clip_id}: clip is empty (0 samples)")
        if not np.isfinite(wave).all():
            raise AudioError(f"{clip_id}: clip contains NaN or infinite samples")
        return resample(torch.from_numpy(wave), sample_rate, self.sample_rate).numpy()

    @torch.no_grad()
    def embedding(self, wave, sample_rate: int, clip_id: str | None = None) -> np.ndarray:
        """L2-normalised audio embedding [D] of one mono clip at ``sample_rate`` (resampled to ``self.sample_rate``).

        An empty, multi-channel or non-finite clip raises ``AudioError`` naming ``clip_id``.
        """
        wave = self._wave(wave, sample_rate, clip_id or "clip")
        with _numpy_seed(CROP_SEED):
            features = self.feature_extractor(wave, sampling_rate=self.sample_rate, return_tensors="pt")
        out = self.model.get_audio_features(
            input_features=features["input_features"].to(self.device, torch.float32),
            is_longer=features["is_longer"].to(self.device),
        )
        vector = out if isinstance(out, torch.Tensor) else out.pooler_output
        return F.normalize(vector.float(), dim=-1)[0].cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def text_embedding(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings [N, D]; an empty text raises ``ValueError`` naming its index."""
        if isinstance(texts, str):
            raise TypeError("texts is a list of strings, not one string")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a string")
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self._max_tokens, return_tensors="pt")
        out = self.model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        )
        vectors = out if isinstance(out, torch.Tensor) else out.pooler_output
        return F.normalize(vectors.float(), dim=-1).cpu().numpy().astype(np.float32)

    def text_audio_score(
        self, waves: Sequence, sample_rate: int, texts: Sequence[str], clip_ids: Sequence[str] | None = None
    ) -> np.ndarray:
        """Cosine [N] of clip i's audio embedding with text i's embedding (in [-1, 1]; the CLAPScore pairing).

        ``waves``, ``texts`` (and ``clip_ids``, which name clips in errors; default ``item i``) have one entry per
        item, else ``ValueError``.
        """
        waves, texts = list(waves), list(texts)
        if len(waves) != len(texts):
            raise ValueError(f"{len(waves)} clips but {len(texts)} texts: text_audio_score pairs clip i with text i")
        ids = [f"item {i}" for i in range(len(waves))] if clip_ids is None else list(clip_ids)
        if len(ids) != len(waves):
            raise ValueError(f"{len(waves)} clips but {len(ids)} clip_ids")
        text = self.text_embedding(texts)  # checks the texts before any audio is run
        if not waves:
            return np.zeros(0, np.float32)
        audio = np.stack([self.embedding(w, sample_rate, clip_id) for w, clip_id in zip(waves, ids)])
        return np.clip((audio * text).sum(axis=1), -1.0, 1.0).astype(np.float32)

    def posteriors(self, wave, sample_rate: int) -> np.ndarray:
        raise NotImplementedError("CLAP gives embeddings and text-audio scores, not class posteriors")
