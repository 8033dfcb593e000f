"""One rank of a DDP fine-tune, run by `accelerate launch`: it records a digest of every batch this rank drew
and saves this rank's final weights, so the test can compare the ranks itself. With
``SEAP_TEST_DIE_IN_STEP=n`` every rank stops in training step n (KeyboardInterrupt, before its backward), so
the checkpoints saved before it are what a rerun resumes.

Usage: accelerate launch ... tests/ddp_rank.py PARAMS_YAML OUT_DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from accelerate import PartialState
from safetensors.torch import save_file

from seap_model.config import load_params
from seap_model.fingerprint import stage_fingerprint
from seap_model.stages.finetune import finetune
from seap_model.training import loop, system
from seap_model.training.batches import BatchSampler
from tests.tiny import dies_during_step

drawn: list[str] = []
real_sample, real_train = BatchSampler.sample, system.train_denoiser


def sample(self, batch_size):
    batch = real_sample(self, batch_size)
    drawn.append(hashlib.sha256(batch["latents"].numpy().tobytes() + batch["noise"].numpy().tobytes()).hexdigest())
    return batch


def train(model, *args, **kwargs):
    result = real_train(model, *args, **kwargs)
    rank = PartialState().process_index
    # cloned: the decoupled mode's reference processors are reachable under two names (safetensors refuses that)
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(weights, str(Path(sys.argv[2]) / f"rank{rank}.safetensors"))
    (Path(sys.argv[2]) / f"rank{rank}_batches.json").write_text(json.dumps(drawn))
    return result


BatchSampler.sample = sample
system.train_denoiser = train
if os.environ.get("SEAP_TEST_DIE_IN_STEP"):
    loop.diffusion_loss = dies_during_step(int(os.environ["SEAP_TEST_DIE_IN_STEP"]))

if __name__ == "__main__":
    params = load_params(sys.argv[1])
    finetune(params, stage_fingerprint("finetune", params))
