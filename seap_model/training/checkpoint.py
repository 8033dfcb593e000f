"""Training checkpoints: weights as safetensors, optimiser state loaded with ``weights_only=True``.

Nothing in a checkpoint is ever unpickled: a file that is not what it should be (a pickle where the safetensors
or the optimiser state should be, a truncated file, a broken ``progress.json``) is a CheckpointError naming it.

Layout: ``<dir>/step-<n>/`` holds one complete checkpoint and ``<dir>/latest`` names the newest. A save writes
``step-<n>.partial/``, renames it to ``step-<n>/``, then replaces ``latest`` (an atomic rename of a one-line file)
and only then deletes older steps, so a run killed at any moment leaves ``latest`` naming a complete checkpoint
(or, before the first save finished, no checkpoint at all).

A checkpoint records the fingerprint of what it was trained on (``seap_model.fingerprint.stage_fingerprint``: the
content of the stage's inputs, the params it reads and its code). It is resumed only when that fingerprint
is the current one; otherwise training starts over and one log line says which part changed.

Under DDP every rank draws its own batches from its own generator: ``rng.safetensors`` holds one row per rank
(``generator``: the batch sampler's state, ``torch``: the global RNG's), gathered to the main process that
writes the checkpoint, and each rank restores its own row. A checkpoint saved by another number of processes
is not resumed (its rows cannot be given out to these ranks); training starts over and a log line says so.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from seap_model.errors import SeapError

log = logging.getLogger(__name__)
LATEST = "latest"


class CheckpointError(SeapError):
    """A checkpoint file that cannot be read as what it should be; it was not unpickled."""


def _read(path: Path, load: Callable[[Path], object]):
    """``load(path)``, or a CheckpointError naming the file (the folder can be deleted to train from step 0)."""
    try:
        return load(path)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(
            f"{path}: not a checkpoint file seap reads ({reason}); remove {path.parent} to train from step 0"
        ) from None


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def save_checkpoint(
    path: Path,
    fingerprint: dict,
    step: int,
    history: dict,
    modules: list[torch.nn.Module],
    optimizer,
    lr_schedule,
    ema,
    rng: dict[str, torch.Tensor],
) -> Path:
    """Write a complete checkpoint for ``step`` and make it the one ``latest`` names; returns its folder.
    ``rng`` holds every rank's RNG states, one row per rank (``rng_rows``)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    final = _step_dir(root, step)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_state(modules), str(tmp / "models.safetensors"))
    if ema is not None:
        shadow = {f"{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)}
        save_file(shadow, str(tmp / "ema.safetensors"))
    save_file({k: v.cpu().contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict()}, tmp / "optimizer.pt")
    progress = {
        "fingerprint": fingerprint,
        "step": step,
        "history": history,
        "ema_step": ema.optimization_step if ema else None,
    }
    (tmp / "progress.json").write_text(json.dumps(progress))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    point_latest(root, final.name)
    for old in root.iterdir():
        if old.name not in (final.name, LATEST) and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return final


def _state(modules: list[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The modules' state dicts under ``<index>.``; a tensor reachable under two names (a processor attached to
    the U-Net and kept by its own component) is stored under both, copied, since safetensors refuses shared
    memory."""
    weights, seen = {}, set()
    for i, m in enumerate(modules):
        for k, v in m.state_dict().items():
            v = v.detach().cpu().contiguous()
            weights[f"{i}.{k}"] = v.clone() if v.data_ptr() in seen else v
            seen.add(v.data_ptr())
    return weights


def point_latest(root: Path, name: str) -> None:
    """Make ``latest`` name ``name``: write a new pointer file, then rename it over the old one (atomic)."""
    pointer = root / (LATEST + ".partial")
    pointer.write_text(name + "\n")
    os.replace(pointer, root / LATEST)


def latest_checkpoint(path: Path) -> Path | None:
    """The folder ``latest`` names, if it is complete."""
    pointer = Path(path) / LATEST
    if not pointer.is_file():
        return None
    folder = Path(path) / pointer.read_text().strip()
    return folder if (folder / "progress.json").is_file() else None


def changed_parts(old: dict, new: dict) -> list[str]:
    """Which parts of a fingerprint differ (``code``, ``params``, ``inputs``), for the log line."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def load_checkpoint(
    path: Path,
    fingerprint: dict,
    modules: list[torch.nn.Module],
    optimizer,
    lr_schedule,
    ema,
    generator: torch.Generator,
    rank: int = 0,
    processes: int = 1,
) -> dict | None:
    """Restore everything in place, ``generator`` and the global RNG from row ``rank``, and return {"step",
    "history"}; None if there is no checkpoint, it was trained on other inputs, params or code, or saved by
    another number of ``processes`` (the next save replaces it)."""
    folder = latest_checkpoint(path)
    if folder is None:
        return None
    progress = _read(folder / "progress.json", lambda p: json.loads(p.read_text()))
    if progress["fingerprint"] != fingerprint:
        old = progress["fingerprint"] if isinstance(progress["fingerprint"], dict) else {}
        log.info(
            "not resuming %s (step %d): its %s changed since; training from step 0",
            folder,
            progress["step"],
            " and ".join(changed_parts(old, fingerprint)) or "fingerprint",
        )
        return None
    rng = {k: v if v.dim() == 2 else v[None] for k, v in _read(folder / "rng.safetensors", load_file).items()}
    saved_by = len(rng["generator"])  # a checkpoint from before per-rank states holds one 1-D state: one process
    if saved_by != processes:
        log.info(
            "not resuming %s (step %d): it was saved by %d process%s, this run has %d (each rank resumes its own "
            "batch sampler); training from step 0",
            folder,
            progress["step"],
            saved_by,
            "" if saved_by == 1 else "es",
            processes,
        )
        return None
    weights = _read(folder / "models.safetensors", load_file)
    for i, m in enumerate(modules):
        prefix = f"{i}."
        m.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
    if ema is not None:
        shadow = _read(folder / "ema.safetensors", load_file)
        ema.shadow_params = [shadow[str(i)] for i in range(len(shadow))]
        ema.optimization_step = progress["ema_step"]
    generator.set_state(rng["generator"][rank].clone())
    torch.set_rng_state(rng["torch"][rank].clone())
    opt = _read(folder / "optimizer.pt", lambda p: torch.load(p, weights_only=True))
    optimizer.load_state_dict(opt["optimizer"])
    lr_schedule.load_state_dict(opt["lr_schedule"])
    return {"step": progress["step"], "history": progress["history"]}
