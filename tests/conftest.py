"""Shared fixtures: tiny random components (diffusers-style fast tests) and an offline environment."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def sampling_in_fp32(monkeypatch):
    """In-process tests sample ``auto`` as fp32, whatever this CPU computes natively, so their exact comparisons
    (batch invariance, determinism, golden tables) do not depend on the machine; tests of ``auto`` itself set
    ``seap_model.precision.native_bf16`` as they need. Subprocesses (the e2e runs) resolve it for real."""
    import seap_model.precision

    monkeypatch.setattr(seap_model.precision, "native_bf16", lambda device=None: False)


@pytest.fixture(scope="session")
def tiny_text():
    """The packaged MiniLM tokenizer with a tiny random BERT (fast, same token interface)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from seap_model.models.text_encoder import resolve_text_encoder

    tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return tokenizer, BertModel(config).eval().requires_grad_(False)


@pytest.fixture
def tiny_pipeline(tiny_text):
    """A complete SEAPPipeline of tiny random components (style path perturbed so it matters)."""
    return make_tiny_pipeline(tiny_text)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect API for the whole session (a local ephemeral server, no analytics)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    # A generous start-up wait: on 2 busy cores the server can take longer than the harness's default 30 s.
    with prefect_test_harness(server_startup_timeout=300):
        yield


def make_tiny_pipeline(tiny_text):
    from seap_model.config import FinetuneParams, UNetParams
    from seap_model.models.adapter import StyleAdapter
    from seap_model.models.codec import MelPatchCodec
    from seap_model.models.reference_encoder import ReferenceEncoder
    from seap_model.models.unet import build_unet
    from seap_model.models.vocoder import GriffinLimVocoder
    from seap_model.pipeline import SEAPPipeline
    from seap_model.training.schedulers import sampling_scheduler, training_scheduler

    torch.manual_seed(0)
    tokenizer, text = tiny_text
    codec = MelPatchCodec(n_mels=64, patch=4, downsample=2)
    unet = build_unet(
        UNetParams(block_out_channels=(16, 32), cross_attention=(False, True), attention_heads=2),
        codec.latent_channels,
        32,
        32,
    )
    with torch.no_grad():
        unet.class_embedding.linear_2.weight.normal_(std=0.5)
    return SEAPPipeline(
        unet=unet.eval(),
        scheduler=sampling_scheduler(training_scheduler(FinetuneParams(num_train_timesteps=100))),
        text_encoder=text,
        tokenizer=tokenizer,
        reference_encoder=ReferenceEncoder(channels=(4, 8, 8, 8), layers=(1, 1, 1, 1), embedding_dim=16).eval(),
        adapter=StyleAdapter(32, 16, num_heads=2).eval(),
        codec=codec.eval(),
        vocoder=GriffinLimVocoder(n_iter=4),
        max_text_length=16,
    )


def tone(seconds: float = 2.0, sr: int = 16000, freq: float = 440.0) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return 0.3 * torch.sin(2 * torch.pi * freq * t) + 0.01 * torch.randn(
        t.shape, generator=torch.Generator().manual_seed(1)
    )
