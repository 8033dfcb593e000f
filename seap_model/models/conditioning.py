"""What one guidance branch conditions the U-Net on: the encoded reference, and the prompt tokens, style and
reference tokens it becomes (``SEAPPipeline.condition``). Classifier-free guidance runs several branches, each
with one part dropped to its null value; ``Condition.join`` stacks them for a single U-Net call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Reference:
    """Encoded references: pooled (B, D), or frames (B, T, F) with a mask (B, T) that is False on padding."""

    values: torch.Tensor
    mask: torch.Tensor | None


@dataclass
class Condition:
    """One guidance branch's U-Net inputs (a dropped part is its null value; ``guidance``: a distilled U-Net's
    embedded guidance scales)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    style: torch.Tensor | None
    reference_tokens: torch.Tensor | None
    guidance: torch.Tensor | None = None

    @staticmethod
    def join(branches: list[Condition]) -> Condition:
        """The branches stacked along the batch, for one U-Net call."""

        def cat(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
            if parts[0] is None:
                return None
            if parts[0].dim() == 3:  # reference tokens: a dropped reference's zero tokens are padded to the others'
                longest = max(p.shape[1] for p in parts)
                parts = [torch.nn.functional.pad(p, (0, 0, 0, longest - p.shape[1])) for p in parts]
            return torch.cat(parts)

        return Condition(
            cat([b.tokens for b in branches]),
            cat([b.mask for b in branches]),
            cat([b.style for b in branches]),
            cat([b.reference_tokens for b in branches]),
        )
