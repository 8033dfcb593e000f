"""Training losses: Min-SNR weighted denoising (fine-tuning) and AM-softmax + angular prototypical (encoder)."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from torch import Tensor, nn


def diffusion_loss(model, scheduler: DDPMScheduler, batch: dict, min_snr_gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weighted denoising loss for epsilon or v prediction."""
    x0, noise, t = batch["latents"], batch["noise"], batch["timesteps"]
    noisy = scheduler.add_noise(x0, noise, t)
    target = scheduler.get_velocity(x0, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise
    mse = (model(noisy, t, batch).float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    clipped = snr.clamp(max=min_snr_gamma)
    weight = clipped / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else clipped / snr
    return (weight * mse).mean()


class SoftmaxProtoLoss(nn.Module):
    """AM-softmax over labels plus ``proto_weight`` x angular prototypical loss over crop pairs
    (clova 'softmaxproto')."""

    def __init__(
        self, embedding_dim: int, n_labels: int, margin: float = 0.2, scale: float = 30.0, proto_weight: float = 1.0
    ):
        super().__init__()
        self.margin, self.scale, self.proto_weight = margin, scale, proto_weight
        self.classes = nn.Parameter(torch.randn(n_labels, embedding_dim) * 0.01)
        self.w = nn.Parameter(torch.tensor(10.0))
        self.b = nn.Parameter(torch.tensor(-5.0))

    def forward(self, a: Tensor, b: Tensor, labels: Tensor) -> Tensor:
        z = torch.cat([a, b])
        cos = z @ nn.functional.normalize(self.classes, dim=-1).T
        margin = self.margin * nn.functional.one_hot(labels.repeat(2), cos.shape[1])
        am_softmax = nn.functional.cross_entropy(self.scale * (cos - margin), labels.repeat(2))
        if self.proto_weight == 0:
            return am_softmax
        sim = self.w.clamp_min(1e-6) * (a @ b.T) + self.b
        proto = nn.functional.cross_entropy(sim, torch.arange(len(a), device=a.device))
        return am_softmax + self.proto_weight * proto
