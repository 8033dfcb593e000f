"""PANNs CNN14 loader on tiny random weights saved in the published checkpoint layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seap_model.audio import AudioError
from seap_model.eval.panns import Cnn14, PANNsEvaluator

TINY = (4, 4, 8, 8, 8, 16)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = Cnn14(16000, TINY)
    with torch.no_grad():
        model.logmel_extractor.melW.uniform_(0, 0.1)
        for conv in (model.spectrogram_extractor.stft.conv_real, model.spectrogram_extractor.stft.conv_imag):
            conv.weight.normal_(std=0.05)
    path = tmp_path / "Cnn14_16k_mAP=0.438.pth"
    torch.save({"model": model.state_dict(), "iteration": 0}, path)  # the published file's layout
    return path


def test_published_keys_load_and_give_posteriors_and_embeddings(checkpoint):
    keys = torch.load(checkpoint, weights_only=True)["model"].keys()
    assert {"spectrogram_extractor.stft.conv_real.weight", "logmel_extractor.melW", "bn0.running_mean"} <= set(keys)
    assert {"conv_block6.conv2.weight", "fc1.weight", "fc_audioset.bias"} <= set(keys)
    panns = PANNsEvaluator(checkpoint, widths=TINY)
    clip = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    post, emb = panns.posteriors(clip, 16000), panns.embedding(clip, 16000)
    assert post.shape == (527,) and ((post >= 0) & (post <= 1)).all() and emb.shape == (16,)
    np.testing.assert_array_equal(panns.embedding(clip, 16000), emb)  # deterministic (eval mode)
    assert panns.embedding(np.zeros(100, np.float32) + 0.1, 32000).shape == (16,)  # short clips are padded
    assert panns.version.startswith("sha256-")
    with pytest.raises(AudioError, match="NaN"):
        panns.embedding(np.full(16000, np.nan, np.float32), 16000)


def test_a_checkpoint_that_does_not_fit_names_the_problem(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)["model"]
    del state["fc1.weight"]
    broken = tmp_path / "broken.pth"
    torch.save({"model": state}, broken)
    with pytest.raises(ValueError, match=r"missing \['fc1.weight'\]"):
        PANNsEvaluator(broken, widths=TINY)
    with pytest.raises(ValueError, match="conv_block1.conv1.weight has shape"):
        PANNsEvaluator(checkpoint, widths=(8, 4, 8, 8, 8, 16))
    with pytest.raises(FileNotFoundError, match="no PANNs checkpoint"):
        PANNsEvaluator(tmp_path / "missing.pth")
