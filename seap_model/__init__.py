"""seap: Sound Event Enhanced Prompt Adapter for target-style text-to-audio generation."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["SEAPPipeline", "__version__"]


def __getattr__(name: str):
    # Lazy, so `seap --help` and the data stages do not pay for importing diffusers/transformers.
    if name == "SEAPPipeline":
        from seap_model.pipeline import SEAPPipeline

        return SEAPPipeline
    raise AttributeError(f"module 'seap_model' has no attribute {name!r}")
