"""Training the small AutoencoderKL codec (``codec.type: autoencoder_kl``) on log-mel crops."""

from __future__ import annotations

import logging

import torch

from seap_model.config import CodecParams
from seap_model.models.codec import KLCodec
from seap_model.progress import progress

log = logging.getLogger(__name__)


def train_kl(codec: KLCodec, mels: list[torch.Tensor], params: CodecParams, seed: int) -> list[float]:
    """Train the AutoencoderKL on random crops of normalised log-mels (L1 reconstruction + KL)."""
    gen = torch.Generator().manual_seed(seed)
    crop = 16 * codec.frame_multiple
    opt = torch.optim.AdamW(codec.vae.parameters(), lr=params.lr)
    losses = []
    codec.train()
    for _ in progress(range(params.steps), desc="pretrain-vae", unit="step"):
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
