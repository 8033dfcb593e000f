"""Training checkpoints: weights as safetensors, optimiser state loaded with ``weights_only=True``.

A checkpoint is written to a temporary folder and renamed into place, so a run killed mid-save leaves the
previous checkpoint intact. It resumes only when its fingerprint (params + data) matches.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_checkpoint(
    path: Path,
    fingerprint: str,
    step: int,
    history: dict,
    modules: list[torch.nn.Module],
    optimizer,
    lr_schedule,
    ema,
    generator: torch.Generator,
) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {
        f"{i}.{k}": v.detach().cpu().contiguous() for i, m in enumerate(modules) for k, v in m.state_dict().items()
    }
    save_file(weights, str(tmp / "models.safetensors"))
    if ema is not None:
        shadow = {f"{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)}
        save_file(shadow, str(tmp / "ema.safetensors"))
    save_file({"generator": generator.get_state(), "torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict()}, tmp / "optimizer.pt")
    progress = {
        "fingerprint": fingerprint,
        "step": step,
        "history": history,
        "ema_step": ema.optimization_step if ema else None,
    }
    (tmp / "progress.json").write_text(json.dumps(progress))
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    path: Path,
    fingerprint: str,
    modules: list[torch.nn.Module],
    optimizer,
    lr_schedule,
    ema,
    generator: torch.Generator,
) -> dict | None:
    """Restore everything in place and return {"step", "history"}; None if there is no matching checkpoint."""
    path = Path(path)
    progress_file = path / "progress.json"
    if not progress_file.is_file():
        return None
    progress = json.loads(progress_file.read_text())
    if progress["fingerprint"] != fingerprint:
        return None
    weights = load_file(str(path / "models.safetensors"))
    for i, m in enumerate(modules):
        prefix = f"{i}."
        m.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
    if ema is not None:
        shadow = load_file(str(path / "ema.safetensors"))
        ema.shadow_params = [shadow[str(i)] for i in range(len(shadow))]
        ema.optimization_step = progress["ema_step"]
    rng = load_file(str(path / "rng.safetensors"))
    generator.set_state(rng["generator"])
    torch.set_rng_state(rng["torch"])
    opt = torch.load(path / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(opt["optimizer"])
    lr_schedule.load_state_dict(opt["lr_schedule"])
    return {"step": progress["step"], "history": progress["history"]}
