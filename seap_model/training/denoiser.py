"""The trained part of SEAP as one module (one DDP wrapper, one checkpoint): [encoder ->] adapter -> U-Net."""

from __future__ import annotations

import torch

from seap_model.models.adapter import StyleAdapter
from seap_model.models.reference_attention import ReferenceAttention
from seap_model.models.reference_encoder import ReferenceEncoder


class StyledDenoiser(torch.nn.Module):
    """[encoder ->] adapter -> style -> U-Net (or reference tokens -> the U-Net's cross-attention), called on
    a batch from ``BatchSampler``.

    With a ``reference_encoder`` (``finetune.train_encoder``) the references are embedded from their waveforms
    at every step so the encoder is trained with the adapter; its BatchNorm statistics stay those of
    pretraining (it is kept in eval mode), since fine-tuning batches are small and mostly one event each.
    A ``reference_attention`` is attached to the U-Net for the model's life (``release`` detaches it).
    """

    def __init__(
        self,
        unet,
        adapter: StyleAdapter | None,
        reference_encoder: ReferenceEncoder | None = None,
        reference_attention: ReferenceAttention | None = None,
        frames: bool = False,
    ):
        super().__init__()
        self.unet, self.adapter, self.reference_encoder = unet, adapter, reference_encoder
        self.reference_attention, self.frames = reference_attention, frames
        self._own_processors = reference_attention.attach(unet) if reference_attention is not None else None

    def release(self) -> None:
        """Give the U-Net its own attention processors back (before it is saved on its own)."""
        if self._own_processors is not None:
            self.unet.set_attn_processor(self._own_processors)
            self._own_processors = None

    def train(self, mode: bool = True) -> StyledDenoiser:
        super().train(mode)
        if self.reference_encoder is not None:
            self.reference_encoder.eval()
        return self

    def reference(self, batch: dict) -> torch.Tensor:
        """The batch's references as the model takes them: pooled (B, R) or frames (B, T, R)."""
        if self.reference_encoder is None:
            return batch["reference_frames" if self.frames else "reference"]
        encode = self.reference_encoder.frames if self.frames else self.reference_encoder
        return encode(batch["reference_audio"], validate=False)  # references were checked when SERST was built

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        style, context = None, batch["tokens"]
        if self.adapter is not None:
            style = self.adapter(batch["tokens"], batch["mask"], self.reference(batch), batch["keep_reference"])
        if self.reference_attention is not None:
            context = (context, [self.reference_attention.tokens(self.reference(batch), batch["keep_reference"])])
        return self.unet(
            noisy,
            t,
            encoder_hidden_states=context,
            encoder_attention_mask=batch["mask"],
            class_labels=style,
            timestep_cond=batch.get("timestep_cond"),  # a distilled U-Net's embedded guidance scales
        ).sample


def trainable_parameters(unet, adapter, which: str, reference_attention=None) -> list[torch.nn.Parameter]:
    """Adapter + whole U-Net (the paper), or adapter + only what turns (timestep, style) into norm modulation;
    the reference attention, when there is one, is trained in both."""
    own = {id(p) for p in reference_attention.parameters()} if reference_attention is not None else set()
    if which == "adapter_unet":
        chosen = [p for p in unet.parameters() if id(p) not in own]
    else:
        if unet.class_embedding is None and reference_attention is None:
            raise ValueError("finetune.trainable 'adapter_modulation' needs the style path (style must not be 'off')")
        chosen = [p for n, p in unet.named_parameters() if n.startswith("class_embedding.") or ".time_emb_proj." in n]
    chosen += list(adapter.parameters()) if adapter is not None else []
    chosen += list(reference_attention.parameters()) if reference_attention is not None else []
    wanted = {id(p) for p in chosen}
    for p in unet.parameters():
        p.requires_grad_(id(p) in wanted)
    return chosen
