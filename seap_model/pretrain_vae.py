"""The pretrain-vae stage: fit the latent codec on the training scenes.

For the patchify codec this fits the per-mel-bin normalisation (nothing else to learn); for
``codec.type: autoencoder_kl`` it also trains a small AutoencoderKL; for ``pretrained`` it wraps a
pretrained AutoencoderKL folder (e.g. AudioLDM's ``vae/``) and fits only the normalisation.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from tqdm import tqdm

from seap_model.audio import LogMel, load_audio
from seap_model.config import CodecParams, Params
from seap_model.data.manifest import read_manifest
from seap_model.models.codec import KLCodec, MelPatchCodec, small_vae_config

log = logging.getLogger(__name__)


def make_codec(params: CodecParams, n_mels: int, downsample: int) -> MelPatchCodec | KLCodec:
    """An unfitted codec of the configured type (a pretrained VAE keeps its weights)."""
    if params.type == "patchify":
        return MelPatchCodec(n_mels=n_mels, patch=params.patch, downsample=downsample)
    if params.type == "autoencoder_kl":
        vae_config = small_vae_config(params.latent_channels, tuple(params.block_out_channels))
        return KLCodec(vae_config=vae_config, n_mels=n_mels, downsample=downsample)
    vae = AutoencoderKL.from_pretrained(params.pretrained, subfolder=_subfolder(params.pretrained, "vae"))
    if vae.config.in_channels != 1:
        raise ValueError(
            f"pretrained VAE {params.pretrained}: expected a 1-channel (mel) VAE, got "
            f"in_channels={vae.config.in_channels}"
        )
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    codec = KLCodec(
        vae_config=config,
        n_mels=n_mels,
        downsample=downsample,
        scaling_factor=vae.config.scaling_factor,
        time_major=True,
    )
    codec.vae.load_state_dict(vae.state_dict())
    return codec


def _subfolder(path: str, name: str) -> str | None:
    return name if (Path(path) / name / "config.json").is_file() else None


def train_kl(codec: KLCodec, mels: list[torch.Tensor], params: CodecParams, seed: int) -> list[float]:
    """Train the AutoencoderKL on random crops of normalised log-mels (L1 reconstruction + KL)."""
    gen = torch.Generator().manual_seed(seed)
    crop = 16 * codec.frame_multiple
    opt = torch.optim.AdamW(codec.vae.parameters(), lr=params.lr)
    losses = []
    codec.train()
    for _ in tqdm(range(params.steps), desc="pretrain-vae", unit="step"):
        idx = torch.randint(len(mels), (params.batch_size,), generator=gen)
        batch = []
        for i in idx.tolist():
            m = mels[i]
            start = int(torch.randint(max(1, m.shape[-1] - crop + 1), (1,), generator=gen))
            batch.append(torch.nn.functional.pad(m[:, start : start + crop], (0, max(0, crop - m.shape[-1]))))
        x = codec.normalise(torch.stack(batch)).unsqueeze(1)
        dist = codec.vae.encode(x).latent_dist
        recon = codec.vae.decode(dist.sample(generator=gen)).sample
        loss = (recon - x).abs().mean() + params.kl_weight * dist.kl().mean() / x[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    codec.eval()
    return losses


def pretrain_vae(params: Params) -> dict:
    """Fit the codec on the train split and save it to ``codec.out_dir``."""
    torch.manual_seed(params.seed)
    start = time.perf_counter()
    settings = params.audio.mel()
    logmel = LogMel(settings)
    downsample = 2 ** (len(params.finetune.unet.block_out_channels) - 1)
    codec = make_codec(params.codec, settings.n_mels, downsample)
    serst = Path(params.data.serst_dir)
    scenes = read_manifest(serst / "train.jsonl")
    with torch.no_grad():
        mels = [logmel(load_audio(s.path(s.audio), settings.sample_rate)) for s in tqdm(scenes, desc="log-mel")]
    if params.codec.type != "pretrained":  # a pretrained VAE reads the raw log-mel it was trained on
        codec.fit_normalisation(mels)
    metrics: dict = {"codec": params.codec.type, "scenes": len(mels)}
    if params.codec.type == "autoencoder_kl":
        losses = train_kl(codec, mels, params.codec, params.seed)
        metrics["final_loss"] = losses[-1]
    with torch.no_grad():
        probe = torch.stack([codec.crop_frames(m) for m in mels[: min(8, len(mels))]])
        metrics["recon_l1_logmel"] = float((codec.decode(codec.encode(probe)) - probe).abs().mean())
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    out, report = Path(params.codec.out_dir), Path(params.codec.report_dir)
    codec.save_pretrained(out)
    report.mkdir(parents=True, exist_ok=True)
    (report / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("codec %s saved to %s (reconstruction L1 %.4f)", params.codec.type, out, metrics["recon_l1_logmel"])
    return metrics
