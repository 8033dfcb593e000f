"""CLAP evaluator on tiny random ClapModels saved in the published folder layout (offline, a few seconds)."""

from __future__ import annotations

import json
import shutil

import huggingface_hub.constants
import numpy as np
import pytest
import torch
import transformers
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from seap_model.audio import AudioError, resample
from seap_model.eval.clap import ClapEvaluator

RATE = 48000
MERGES = ["Ġ d", "o g", "Ġd og", "Ġ c", "a t", "Ġc at", "Ġ b", "a r", "Ġb ar", "k s"]


def _tokenizer_files(folder) -> None:
    """A tiny byte-level BPE vocabulary (specials, the 256 byte symbols, a few merges) as vocab.json + merges.txt."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in bytes_to_unicode().values():
        vocab.setdefault(symbol, len(vocab))
    for merge in MERGES:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    vocab["<mask>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")


def _tiny_clap(root, fused: bool) -> tuple[ClapModel, ClapFeatureExtractor, RobertaTokenizer]:
    _tokenizer_files(root / "vocab")
    tokenizer = RobertaTokenizer.from_pretrained(root / "vocab", model_max_length=32)
    # HTSAT: spec_size // num_mel_bins is the freq ratio; the fusion crops are resized to 64 mel bins, so a fused
    # model keeps 64. 1 s windows (101 frames) are interpolated up to spec_size * ratio frames.
    mels, spec = (64, 128) if fused else (16, 64)
    config = ClapConfig(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "max_position_embeddings": 34,
        },
        audio_config={
            "spec_size": spec,
            "num_mel_bins": mels,
            "window_size": 4,
            "patch_size": 4,
            "patch_stride": 4,
            "depths": [1, 1],
            "num_attention_heads": [1, 2],
            "patch_embeds_hidden_size": 8,
            "hidden_size": 16,  # patch_embeds_hidden_size * 2 ** (len(depths) - 1), what the projection reads
            "mlp_ratio": 2.0,
            "num_classes": 4,
            "enable_fusion": fused,
            "fusion_type": "aff_2d" if fused else None,
        },
        projection_dim=8,
    )
    torch.manual_seed(0)
    model = ClapModel(config).eval()
    extractor = ClapFeatureExtractor(
        feature_size=mels,
        sampling_rate=RATE,
        hop_length=480,
        max_length_s=1,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14000,
        truncation="fusion" if fused else "rand_trunc",
        padding="repeatpad",
    )
    return model, extractor, tokenizer


def _published(root, fused: bool):
    """The layout of laion/clap-htsat-*: config, weights, preprocessor_config.json, tokenizer files."""
    model, extractor, tokenizer = _tiny_clap(root, fused)
    folder = root / ("clap-tiny-fused" if fused else "clap-tiny-unfused")
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(root / "vocab" / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def unfused(tmp_path_factory):
    return _published(tmp_path_factory.mktemp("clap_unfused"), fused=False)


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    return _published(tmp_path_factory.mktemp("clap_fused"), fused=True)


@pytest.fixture(scope="module")
def clap(unfused):
    return ClapEvaluator(unfused)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at import


def _clip(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.05, t.size)
    return (0.3 * np.sin(2 * np.pi * 440 * t) + noise).astype(np.float32)


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 2500 * t)).astype(np.float32)


def test_published_layout_loads_and_gives_unit_embeddings(unfused):
    names = {p.name for p in unfused.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json"} <= names
    assert {"vocab.json", "merges.txt"} <= names
    clap = ClapEvaluator(unfused)
    assert (
        clap.name == "clap"
        and clap.sample_rate == RATE
        and (clap.padding, clap.truncation) == ("repeatpad", "rand_trunc")
    )
    assert clap.version == f"clap-tiny-unfused-transformers-{transformers.__version__}-sha256-" + clap.version[-16:]
    assert ClapEvaluator(str(unfused)).version == clap.version
    emb = clap.embedding(_clip(0.5), RATE)
    assert emb.shape == (8,) and emb.dtype == np.float32 and abs(np.linalg.norm(emb) - 1) < 1e-5
    np.testing.assert_array_equal(clap.embedding(_clip(0.5), RATE), emb)  # deterministic (eval mode)
    assert clap.embedding(torch.from_numpy(_clip(0.02)), RATE).shape == (8,)  # shorter than the window: repeatpad
    with pytest.raises(NotImplementedError, match="not class posteriors"):
        clap.posteriors(_clip(0.5), RATE)


def test_other_sample_rates_are_resampled_to_the_extractor_rate(clap):
    clip16 = _clip(0.8, 16000)
    at16 = clap.embedding(clip16, 16000)
    np.testing.assert_allclose(at16, clap.embedding(resample(torch.from_numpy(clip16), 16000, RATE), RATE), atol=1e-6)
    tone16 = clap.embedding(_tone(0.8, 16000), 16000)
    assert np.dot(tone16, clap.embedding(_tone(0.8, RATE), RATE)) > 0.995  # the same (band-limited) sound at 48 kHz
    assert np.dot(tone16, clap.embedding(_tone(0.8, 16000), RATE)) < 0.9  # misread as 48 kHz it is another sound


def test_text_embeddings_and_paired_scores(clap):
    texts = ["a dog barks", "a cat"]
    text = clap.text_embedding(texts)
    assert text.shape == (2, 8) and text.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(clap.text_embedding(texts[::-1]), text[::-1], atol=1e-6)  # independent of batch
    clips = [_clip(0.5, 16000, seed=1), _clip(1.5, 16000, seed=2)]
    scores = clap.text_audio_score(clips, 16000, texts)
    assert scores.shape == (2,) and scores.dtype == np.float32 and (np.abs(scores) <= 1).all()
    expected = [np.dot(clap.embedding(c, 16000), t) for c, t in zip(clips, text)]
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert clap.text_audio_score([], 16000, []).shape == (0,)
    with pytest.raises(ValueError, match="2 clips but 1 texts"):
        clap.text_audio_score(clips, 16000, texts[:1])
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        clap.text_audio_score(clips, 16000, ["a dog", "  "])
    with pytest.raises(TypeError, match="not one string"):
        clap.text_embedding("a dog")


def test_bad_audio_names_the_clip(clap):
    nan = np.full(8000, np.nan, np.float32)
    with pytest.raises(AudioError, match="dog-0007: clip contains NaN"):
        clap.embedding(nan, 16000, clip_id="dog-0007")
    with pytest.raises(AudioError, match="item 1: clip contains NaN"):
        clap.text_audio_score([_clip(0.5), nan], RATE, ["a dog", "a cat"])
    with pytest.raises(AudioError, match="b: clip contains NaN"):
        clap.text_audio_score([_clip(0.5), np.full(10, np.inf)], RATE, ["a dog", "a cat"], clip_ids=["a", "b"])
    with pytest.raises(AudioError, match="clip is empty"):
        clap.embedding(np.zeros(0, np.float32), RATE)
    with pytest.raises(AudioError, match="one mono waveform"):
        clap.embedding(np.zeros((2, 100), np.float32), RATE)


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_random_crops_of_long_clips_are_seeded(kind, request):
    clap = ClapEvaluator(request.getfixturevalue(kind))
    long = _clip(2.5)  # longer than max_length_s: rand_trunc / fusion crop at random
    np.random.seed(123)
    emb = clap.embedding(long, RATE)
    after = np.random.random()
    np.random.seed(123)
    assert np.random.random() == after  # the global generator is left as it was
    np.testing.assert_array_equal(clap.embedding(long, RATE), emb)
    assert emb.shape == (8,) and abs(np.linalg.norm(emb) - 1) < 1e-5
    assert clap.embedding(_clip(0.3), RATE).shape == (8,)


def test_processor_layout_of_this_transformers_version_loads_too(unfused, tmp_path):
    folder = tmp_path / "clap-v5"
    ClapModel.from_pretrained(unfused, local_files_only=True).save_pretrained(folder)
    ClapProcessor.from_pretrained(unfused, local_files_only=True).save_pretrained(folder)  # processor_config.json
    assert (folder / "processor_config.json").is_file()
    clip = _clip(0.5)
    np.testing.assert_allclose(
        ClapEvaluator(folder).embedding(clip, RATE), ClapEvaluator(unfused).embedding(clip, RATE)
    )


def test_sources_that_cannot_be_loaded_say_why(unfused, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such CLAP folder"):
        ClapEvaluator(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no such CLAP folder"):
        ClapEvaluator(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ClapEvaluator(tmp_path)
    with pytest.raises(OSError, match="nobody-here/no-such-clap: cannot load .* hub id"):
        ClapEvaluator("nobody-here/no-such-clap")  # offline: the cache is looked at, nothing downloaded
    broken = tmp_path / "broken"
    shutil.copytree(unfused, broken)
    settings = json.loads((broken / "preprocessor_config.json").read_text())
    (broken / "preprocessor_config.json").write_text(json.dumps({**settings, "truncation": "fusion"}))
    with pytest.raises(ValueError, match="truncation 'fusion' but config.json audio_config.enable_fusion is False"):
        ClapEvaluator(broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type is 'bert'"):
        ClapEvaluator(broken)
