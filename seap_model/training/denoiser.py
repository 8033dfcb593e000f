"""The trained part of SEAP as one module (one DDP wrapper, one checkpoint): [encoder ->] adapter -> U-Net."""

from __future__ import annotations

import torch

from seap_model.models.adapter import StyleAdapter
from seap_model.models.reference_encoder import ReferenceEncoder


class StyledDenoiser(torch.nn.Module):
    """[encoder ->] adapter -> style -> U-Net, called on a batch from ``BatchSampler``.

    With a ``reference_encoder`` (``finetune.train_encoder``) the references are embedded from their waveforms
    at every step so the encoder is trained with the adapter; its BatchNorm statistics stay those of
    pretraining (it is kept in eval mode), since fine-tuning batches are small and mostly one event each.
    """

    def __init__(self, unet, adapter: StyleAdapter | None, reference_encoder: ReferenceEncoder | None = None):
        super().__init__()
        self.unet, self.adapter, self.reference_encoder = unet, adapter, reference_encoder

    def train(self, mode: bool = True) -> StyledDenoiser:
        super().train(mode)
        if self.reference_encoder is not None:
            self.reference_encoder.eval()
        return self

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        style = None
        if self.adapter is not None:
            reference = batch["reference"]
            if self.reference_encoder is not None:  # references were checked when SERST was built
                reference = self.reference_encoder(batch["reference_audio"], validate=False)
            style = self.adapter(batch["tokens"], batch["mask"], reference, batch["keep_reference"])
        return self.unet(
            noisy, t, encoder_hidden_states=batch["tokens"], encoder_attention_mask=batch["mask"], class_labels=style
        ).sample


def trainable_parameters(unet, adapter, which: str) -> list[torch.nn.Parameter]:
    """Adapter + whole U-Net (the paper), or adapter + only what turns (timestep, style) into norm modulation."""
    if which == "adapter_unet":
        chosen = list(unet.parameters())
    else:
        if unet.class_embedding is None:
            raise ValueError("finetune.trainable 'adapter_modulation' needs the style path (style must not be 'off')")
        chosen = [p for n, p in unet.named_parameters() if n.startswith("class_embedding.") or ".time_emb_proj." in n]
    chosen += list(adapter.parameters()) if adapter is not None else []
    wanted = {id(p) for p in chosen}
    for p in unet.parameters():
        p.requires_grad_(id(p) in wanted)
    return chosen
