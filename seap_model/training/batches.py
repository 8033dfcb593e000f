"""Training batches drawn from the cache: window, reference, condition dropout, noise and timesteps."""

from __future__ import annotations

import torch

from seap_model.config import FinetuneParams
from seap_model.training.dataset import SplitCache


class BatchSampler:
    """Draws training batches (window, reference, condition dropout) from a seeded generator."""

    def __init__(self, cache: SplitCache, tokens: torch.Tensor, mask: torch.Tensor, fp: FinetuneParams, seed: int):
        if not cache.windows:
            raise ValueError("the train split has no captioned windows: nothing to fine-tune on")
        self.cache, self.tokens, self.mask, self.fp = cache, tokens, mask, fp
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        g = self.generator
        cache = self.cache
        picks = torch.randint(len(cache.windows), (batch_size,), generator=g).tolist()
        u = torch.rand(batch_size, generator=g)
        both, style_only = self.fp.drop_both, self.fp.drop_both + self.fp.drop_style
        drop_both = u < both
        drop_style = (u >= both) & (u < style_only)
        drop_text = (u >= style_only) & (u < style_only + self.fp.drop_text)
        latents, captions, refs, keep = [], [], [], []
        for i, w in enumerate(picks):
            win = cache.windows[w]
            latents.append(cache.crop(win))
            captions.append(0 if drop_both[i] or drop_text[i] else win.caption)
            r = int(torch.randint(len(win.references), (1,), generator=g)) if win.references else -1
            refs.append(win.references[r] if r >= 0 else -1)
            keep.append(r >= 0 and not bool(drop_both[i] or drop_style[i]))
        idx = torch.tensor(captions)
        return {
            "latents": torch.stack(latents),
            "tokens": self.tokens[idx],
            "mask": self.mask[idx],
            **cache.reference_rows(refs),
            "keep_reference": torch.tensor(keep),
            "noise": torch.randn(batch_size, *latents[0].shape, generator=g),
            "timesteps": torch.randint(self.fp.num_train_timesteps, (batch_size,), generator=g),
        }


def fixed_val_batch(cache: SplitCache, tokens, mask, fp: FinetuneParams, seed: int, size: int = 64) -> dict | None:
    """Validation batch with fixed windows, timesteps and noise, conditions kept (comparable across runs)."""
    if not cache.windows:
        return None
    g = torch.Generator().manual_seed(seed + 1)
    windows = cache.windows[:size]
    n = len(windows)
    return {
        "latents": torch.stack([cache.crop(w) for w in windows]),
        "tokens": tokens[[w.caption for w in windows]],
        "mask": mask[[w.caption for w in windows]],
        **cache.reference_rows([w.references[0] if w.references else -1 for w in windows]),
        "keep_reference": torch.tensor([bool(w.references) for w in windows]),
        "noise": torch.randn(n, *cache.crop(windows[0]).shape, generator=g),
        "timesteps": torch.linspace(0, fp.num_train_timesteps - 1, n).round().long(),
    }
