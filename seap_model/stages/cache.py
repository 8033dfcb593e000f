"""The cache stage: encode every training input once with the frozen models (``seap_model.training.cache``;
read by ``training.dataset``): per split the scene latents, reference embeddings and training windows, and the
tokens of every caption the fine-tune can use (plus the empty caption for guidance).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from seap_model.config import Params
from seap_model.data.manifest import SPLITS, read_labels, read_manifest
from seap_model.models.loading import load_codec, load_reference_encoder
from seap_model.models.text_encoder import encode_text, load_text_encoder
from seap_model.training.cache import WindowGrid, encode_split

log = logging.getLogger(__name__)


def cache(params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Write the latent, text and reference caches and the window index to ``finetune.cache_dir``."""
    serst = Path(params.data.serst_dir)
    out = Path(params.finetune.cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    codec = load_codec(params.codec.out_dir)
    encoder = load_reference_encoder(params.encoder.out_dir)
    tokenizer, text_model = load_text_encoder(params.text_encoder.name)
    captions = read_labels(serst)
    grid = WindowGrid.of(codec, params.audio.mel(), params.finetune.train_seconds)

    caption_ids: dict[str, int] = {"": 0}
    summary: dict[str, int] = {}
    for split in SPLITS:
        scenes = read_manifest(serst / f"{split}.jsonl")
        if not scenes:
            raise ValueError(f"{serst / f'{split}.jsonl'}: no scenes")
        rng = np.random.default_rng((params.seed, SPLITS.index(split)))
        encoded = encode_split(params, scenes, split, codec, encoder, grid, captions, caption_ids, rng)
        save_file(encoded.tensors, str(out / f"{split}.safetensors"))
        windows = [asdict(w) for w in encoded.windows]
        (out / f"{split}_windows.json").write_text(
            json.dumps({"width": grid.width, "time_axis": grid.time_axis, "windows": windows})
        )
        summary[f"{split}_scenes"] = len(scenes)
        summary[f"{split}_windows"] = len(windows)
        summary[f"{split}_references"] = encoded.references
        log.info("%s: %d scenes, %d windows, %d references", split, len(scenes), len(windows), encoded.references)
        if encoded.outside_kinds:
            summary[f"{split}_outside_references"] = dict(encoded.outside_kinds)
            log.info("%s: references outside their window: %s", split, dict(encoded.outside_kinds))

    texts = sorted(caption_ids, key=caption_ids.get)
    tokens, mask = encode_text(tokenizer, text_model, texts, params.text_encoder.max_length)
    save_file({"tokens": tokens.contiguous(), "mask": mask.contiguous()}, str(out / "text.safetensors"))
    (out / "captions.json").write_text(json.dumps(texts, indent=1))
    summary["captions"] = len(texts)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
