"""The pretrain-vae stage: fit the latent codec on the training scenes and save it.

For the patchify codec this fits the per-mel-bin normalisation (nothing else to learn); for
``codec.type: autoencoder_kl`` it also trains a small AutoencoderKL; for ``pretrained`` it wraps a
pretrained AutoencoderKL folder (e.g. AudioLDM's ``vae/``) and fits only the normalisation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from seap_model.audio import LogMel, load_audio
from seap_model.config import Params
from seap_model.data.manifest import read_manifest
from seap_model.models.codec import make_codec
from seap_model.progress import progress, write_run_record
from seap_model.training.vae import train_kl

log = logging.getLogger(__name__)


def pretrain_vae(params: Params, fingerprint: Mapping[str, str]) -> dict:
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
        mels = [logmel(load_audio(s.path(s.audio), settings.sample_rate)) for s in progress(scenes, desc="log-mel")]
    if params.codec.type != "pretrained":  # a pretrained VAE reads the raw log-mel it was trained on
        codec.fit_normalisation(mels)
    metrics: dict = {"codec": params.codec.type, "scenes": len(mels)}
    if params.codec.type == "autoencoder_kl":
        losses = train_kl(codec, mels, params.codec, params.seed)
        metrics["final_loss"] = losses[-1]
    with torch.no_grad():
        probe = torch.stack([codec.crop_frames(m) for m in mels[: min(8, len(mels))]])
        metrics["recon_l1_logmel"] = float((codec.decode(codec.encode(probe)) - probe).abs().mean())
    out, report = Path(params.codec.out_dir), Path(params.codec.report_dir)
    codec.save_pretrained(out)
    report.mkdir(parents=True, exist_ok=True)
    (report / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_run_record(report, {"seconds": round(time.perf_counter() - start, 2)})
    log.info("codec %s saved to %s (reconstruction L1 %.4f)", params.codec.type, out, metrics["recon_l1_logmel"])
    return metrics
