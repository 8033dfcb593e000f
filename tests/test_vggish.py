"""VGGish loader and evaluator on random weights saved in the published torchvggish checkpoint layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from seap_model.audio import AudioError, resample
from seap_model.eval.vggish import VGGish, VGGishEvaluator, load_pca, log_mel_examples, mel_matrix

# vggish-10086976.pth (torchvggish release v0.1), written out here so the layout is checked against the file's
CONVS = {0: (64, 1), 3: (128, 64), 6: (256, 128), 8: (256, 256), 11: (512, 256), 13: (512, 512)}
LINEARS = {0: (4096, 512 * 4 * 6), 2: (4096, 4096), 4: (128, 4096)}
PUBLISHED = {
    **{f"features.{i}.weight": (cout, cin, 3, 3) for i, (cout, cin) in CONVS.items()},
    **{f"features.{i}.bias": (cout,) for i, (cout, _) in CONVS.items()},
    **{f"embeddings.{i}.weight": shape for i, shape in LINEARS.items()},
    **{f"embeddings.{i}.bias": (shape[0],) for i, shape in LINEARS.items()},
}
SR = 16000


def tone(hz: float, seconds: float, sample_rate: int = SR) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * sample_rate)) / sample_rate)).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Random weights in the published layout, at the real size (288 MB), scaled from torch's default init
    (std 1/sqrt(3 fan_in)) to He's (sqrt(2/fan_in)) so that the embedding depends on the input."""
    torch.manual_seed(0)
    model = VGGish()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("weight"):
                tensor.mul_(6**0.5)
    path = tmp_path_factory.mktemp("vggish") / "vggish-10086976.pth"
    torch.save(model.state_dict(), path)  # a plain state dict, as published
    return path


@pytest.fixture(scope="module")
def vggish(checkpoint) -> VGGishEvaluator:
    return VGGishEvaluator(checkpoint)


def test_the_published_layout_loads_and_gives_clip_embeddings(checkpoint, vggish):
    with torch.device("meta"):
        assert {k: tuple(v.shape) for k, v in VGGish().state_dict().items()} == PUBLISHED
    assert set(torch.load(checkpoint, weights_only=True)) == set(PUBLISHED)
    assert vggish.name == "vggish" and vggish.sample_rate == SR and vggish.version.startswith("sha256-")
    assert not vggish.postprocess
    clip = tone(440, 2.5)  # 248 frames: two whole 0.96 s examples, the rest dropped
    rows = vggish.examples(clip, SR)
    assert rows.shape == (2, 128) and rows.dtype == np.float32
    emb = vggish.embedding(clip, SR)
    assert emb.shape == (128,) and emb.dtype == np.float32 and np.isfinite(emb).all()
    np.testing.assert_allclose(emb, rows.mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(vggish.examples(clip, SR), rows)  # deterministic
    noise = np.random.default_rng(0).normal(0, 0.1, 2 * SR).astype(np.float32)
    assert np.linalg.norm(vggish.embedding(noise, SR) - emb) > 0.1 * np.linalg.norm(emb)
    with pytest.raises(NotImplementedError, match="no classifier"):
        vggish.posteriors(clip, SR)


def test_resampling_happens_inside(vggish):
    at_16k = vggish.embedding(tone(440, 1.0), SR)
    at_32k = vggish.embedding(tone(440, 1.0, 32000), 32000)
    np.testing.assert_allclose(at_32k, at_16k, atol=1e-3 * np.abs(at_16k).max())
    clip = np.random.default_rng(1).normal(0, 0.1, 32000).astype(np.float32)
    np.testing.assert_allclose(
        vggish.embedding(clip, 32000), vggish.embedding(resample(torch.from_numpy(clip), 32000, SR), SR), rtol=1e-5
    )


def test_short_and_silent_clips_are_padded_to_one_example(vggish):
    short = tone(1000, 0.3)
    assert vggish.examples(short, SR).shape == (1, 128)
    padded = np.concatenate([short, np.zeros(15600 - short.size, np.float32)])  # 96 frames' span, 0.975 s
    np.testing.assert_array_equal(vggish.embedding(short, SR), vggish.embedding(padded, SR))
    assert vggish.examples(tone(1000, 0.97), SR).shape == (1, 128)
    assert np.isfinite(vggish.embedding(np.zeros(SR, np.float32), SR)).all()
    assert vggish.embedding(np.stack([short, short]), SR).shape == (128,)  # (channels, samples) downmixed


def test_bad_clips_name_the_clip(vggish):
    bad = tone(440, 1.0)
    bad[100] = np.nan
    with pytest.raises(AudioError, match="clip gen/0042.wav: .*NaN"):
        vggish.embedding(bad, SR, clip_id="gen/0042.wav")
    bad[100] = np.inf
    with pytest.raises(AudioError, match="clip x7: .*infinite"):
        vggish.examples(bad, SR, clip_id="x7")
    with pytest.raises(AudioError, match="empty"):
        vggish.embedding(np.zeros(0, np.float32), SR)


def test_the_front_end_is_vggish_documented_one():
    # mel weights: torchaudio's HTK filterbank draws the same triangles in Hz instead of mel
    htk = torchaudio.functional.melscale_fbanks(257, 125.0, 7500.0, 64, SR, norm=None, mel_scale="htk")
    assert mel_matrix().shape == (257, 64) and (mel_matrix() - htk.double()).abs().max() < 0.005
    wave = np.random.default_rng(2).normal(0, 0.1, 40000)
    frames = np.lib.stride_tricks.sliding_window_view(wave, 400)[::160]  # 25 ms every 10 ms, not centred
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic
    log_mel = np.log(np.abs(np.fft.rfft(frames * hann, 512)) @ mel_matrix().numpy() + 0.01)
    examples = log_mel_examples(torch.from_numpy(wave))
    assert examples.shape == (2, 1, 96, 64) and len(log_mel) == 248
    np.testing.assert_allclose(examples[:, 0].numpy(), log_mel[:192].reshape(2, 96, 64), atol=1e-5)


def test_pca_postprocessing_quantises_on_the_grid(checkpoint, vggish, tmp_path):
    clip = tone(440, 2.0)
    raw = vggish.examples(clip, SR)
    rng = np.random.default_rng(3)  # scaled so that most PCA outputs fall inside [-2, 2], a few clipped
    eigen, means = rng.normal(0, 1.0 / (np.abs(raw).mean() * 128**0.5), (128, 128)), rng.normal(0, 0.01, 128)
    pca = tmp_path / "vggish_pca_params-970ea276.pth"
    # NumPy float64 arrays, as torchvggish's release is read; written under NumPy 1.x's module name
    torch.save({"pca_eigen_vectors": eigen, "pca_means": means}, pca, _use_new_zipfile_serialization=False)
    pca.write_bytes(pca.read_bytes().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    post = VGGishEvaluator(checkpoint, pca)
    assert post.postprocess and post.version.startswith(vggish.version + "+pca-sha256-")
    rows = post.examples(clip, SR)
    assert not np.allclose(rows, raw)
    assert rows.min() >= -2.0 and rows.max() <= 2.0 and 0 < np.abs(rows).max()
    codes = (rows + 2.0) * 255.0 / 4.0
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    # torchvggish's Postprocessor: eigen @ (raw.T - means[:, None]), clipped, codes round((x + 2) * 255 / 4)
    expected = np.round((np.clip((eigen @ (raw.T.astype(np.float64) - means[:, None])).T, -2, 2) + 2) * 255 / 4)
    assert (np.abs(np.round(codes) - expected) <= 1).all() and (np.round(codes) == expected).mean() > 0.99
    np.testing.assert_allclose(post.embedding(clip, SR), rows.mean(axis=0), rtol=1e-6)

    as_column = tmp_path / "column.pth"  # pca_means [128, 1] as tensors (torchvggish's own layout) is accepted too
    torch.save({"pca_eigen_vectors": torch.tensor(eigen), "pca_means": torch.tensor(means[:, None])}, as_column)
    for got, want in zip(load_pca(as_column), load_pca(pca)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    wrong = tmp_path / "wrong_pca.pth"
    torch.save({"pca_eigen_vectors": torch.zeros(128, 64), "pca_means": torch.zeros(128)}, wrong)
    with pytest.raises(ValueError, match=r"wrong_pca.pth: pca_eigen_vectors has shape \(128, 64\)"):
        load_pca(wrong)
    torch.save({"pca_eigen_vectors": torch.zeros(128, 128)}, wrong)
    with pytest.raises(ValueError, match=r"wrong_pca.pth: .*missing \['pca_means'\]"):
        load_pca(wrong)


def test_a_checkpoint_that_does_not_fit_names_the_key_and_file(tmp_path):
    # small stand-ins: names are checked before any shape, shapes in the file's order
    state = {name: torch.zeros(shape) for name, shape in PUBLISHED.items() if not name.startswith("embeddings")}
    state |= {name: torch.zeros(1) for name in PUBLISHED if name.startswith("embeddings")}
    missing = tmp_path / "missing_key.pth"
    torch.save({**{k: v for k, v in state.items() if k != "embeddings.4.bias"}, "fc.bias": torch.zeros(1)}, missing)
    with pytest.raises(
        ValueError, match=r"missing_key.pth: .*missing \['embeddings.4.bias'\], unexpected \['fc.bias'\]"
    ):
        VGGishEvaluator(missing)
    state["features.0.weight"] = torch.zeros(32, 1, 3, 3)
    wrong = tmp_path / "wrong_shape.pth"
    torch.save(state, wrong)
    with pytest.raises(ValueError, match=r"wrong_shape.pth: features.0.weight has shape \(32, 1, 3, 3\)"):
        VGGishEvaluator(wrong)
    state["features.0.weight"] = torch.zeros(PUBLISHED["features.0.weight"])
    torch.save(state, wrong)
    with pytest.raises(ValueError, match=r"wrong_shape.pth: embeddings.0.weight has shape \(1,\), .* \(4096, 12288\)"):
        VGGishEvaluator(wrong)
    with pytest.raises(FileNotFoundError, match="no VGGish checkpoint"):
        VGGishEvaluator(tmp_path / "absent.pth")
