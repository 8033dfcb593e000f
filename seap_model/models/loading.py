"""Loading a saved component whose class is one of several (the folder's config.json names it)."""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import ModelMixin

from seap_model.models.codec import KLCodec, MelPatchCodec
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.yamnet_encoder import YAMNetEncoder


def load_saved(path: str | Path, classes: list[type[ModelMixin]], what: str, stage: str) -> ModelMixin:
    """``from_pretrained`` of the class named by ``_class_name`` in ``path/config.json``, in eval mode."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: no {what} saved here (run `seap {stage}`)")
    name = json.loads(config.read_text()).get("_class_name")
    by_name = {cls.__name__: cls for cls in classes}
    if name not in by_name:
        raise ValueError(f"{config}: unknown {what} class {name!r} (known: {sorted(by_name)})")
    return by_name[name].from_pretrained(path).eval()


def load_reference_encoder(path: str | Path) -> ReferenceEncoder | YAMNetEncoder:
    """Load a saved reference encoder of any type (``ReferenceEncoder`` or ``YAMNetEncoder``), in eval mode."""
    return load_saved(path, [ReferenceEncoder, YAMNetEncoder], "reference encoder", "pretrain-encoder")


def load_codec(path: str | Path) -> MelPatchCodec | KLCodec:
    """Load whichever codec was saved at ``path`` (its config names the class)."""
    return load_saved(path, [MelPatchCodec, KLCodec], "codec", "pretrain-vae")
