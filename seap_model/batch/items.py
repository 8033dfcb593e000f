"""The generate stage's items (the test split, or a prompts file) through the batch engine into a local folder.

Each output is the engine's ``<id>-<hash16>.wav`` with its sidecar ``<id>-<hash16>.json`` (``batch.engine``):
a re-run skips an item only when its output was made from the same prompt, reference content, sampling
settings, model and generation code; anything else is generated again, and the item's older outputs are
removed (a failed item's too), so the folder holds what this run stands for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seap_model.batch.engine import ITEM_ID, Request, prune, run
from seap_model.batch.storage import LocalFiles, LocalStorage, UnsafeKey
from seap_model.config import SamplingParams
from seap_model.data.manifest import read_labels, read_manifest
from seap_model.pipeline import SEAPPipeline
from seap_model.rows import BadRow, control_problem, decode, json_row, lines, utf8_problem


@dataclass(frozen=True)
class Item:
    """One clip to generate. ``label``/``scene_audio``/``start`` are known only for items from a SERST split."""

    id: str
    prompt: str
    reference: Path
    label: str | None = None
    scene_audio: Path | None = None
    start: float = 0.0


def split_items(serst_dir: str | Path, split: str = "test", max_items: int | None = None) -> list[Item]:
    """One item per (scene, labelled reference): the label's caption as prompt, the reference clip as style."""
    captions = read_labels(serst_dir)
    items: list[Item] = []
    for scene in read_manifest(Path(serst_dir) / f"{split}.jsonl"):
        seen: set[str] = set()
        for ref in scene.references:
            if ref.label in seen:
                continue
            seen.add(ref.label)
            items.append(
                Item(
                    id=f"{scene.id}_{ref.label}",
                    prompt=captions[ref.label],
                    reference=scene.path(ref.audio),
                    label=ref.label,
                    scene_audio=scene.path(scene.audio),
                    start=max(0.0, ref.spans[0][0] - 0.1),
                )
            )
    return items[:max_items] if max_items else items


def prompt_file_items(path: str | Path) -> tuple[list[Item], list[dict]]:
    """Items from a JSONL file of ``{"id", "prompt", "reference"}`` rows, ``reference`` a path under the file's
    folder (as in a batch job: ``..``, absolute paths, URLs and symbolic links that lead out of it are refused;
    an id given as a number stands for its text).

    Malformed rows are returned as failures (``item``: file:line, ``reason``: the field), not raised: a batch job
    skips them.
    """
    path = Path(path)
    items, failures = [], []
    seen: dict[str, int] = {}
    for n, line in enumerate(lines(decode(path.read_bytes())), 1):
        if not line.strip():
            continue
        try:
            item_id, prompt, reference = _prompt_row(json_row(line), seen)
        except BadRow as exc:
            failures.append({"item": f"{path}:{n}", "reason": str(exc)})
            continue
        try:
            reference_path = Path(LocalStorage(path.parent).where(reference))
        except UnsafeKey as exc:
            failures.append({"item": f"{path}:{n}", "reason": f"field 'reference': {exc}"})
            continue
        seen[item_id] = n
        items.append(Item(item_id, prompt, reference_path))
    return items, failures


def _prompt_row(row: dict, seen: dict[str, int]) -> tuple[str, str, str]:
    """(id, prompt, reference) of a prompts-file row; BadRow naming the field at fault."""
    for name in ("id", "prompt", "reference"):
        if row.get(name) is None:
            raise BadRow(f"field {name!r}: missing")
    item_id = str(row["id"])
    if not ITEM_ID.match(item_id):
        raise BadRow(f"field 'id': {item_id[:80]!r} must be 1-200 letters, digits, '.', '_' or '-'")
    if item_id in seen:
        raise BadRow(f"field 'id': {item_id!r} repeats line {seen[item_id]}")
    for name in ("prompt", "reference"):
        value = row[name]
        if not isinstance(value, str):
            raise BadRow(f"field {name!r}: expected a string, got {type(value).__name__}")
        problem = utf8_problem(value) or ("is empty" if not value.strip() else None)
        if name == "reference":
            problem = problem or control_problem(value)
        if problem:
            raise BadRow(f"field {name!r}: {problem}")
    return item_id, row["prompt"], row["reference"]


def generate_items(
    pipe: SEAPPipeline,
    items: list[Item],
    out_dir: Path,
    sampling: SamplingParams,
    provenance: dict,
    batch_size: int = 8,
) -> tuple[list[dict], list[dict], int]:
    """Generate every item not already done with this provenance (model and code hashes) and these settings.

    Returns (done rows, failures, skipped as already done), each in the items' order. A bad item (unsafe id,
    empty prompt, unreadable, short or silent reference, a failed or non-finite generation) becomes a failure
    with its reason, its old outputs are removed, and the others still finish.
    """
    out = LocalStorage(Path(out_dir))
    requests = [Request(it.id, it.prompt, str(it.reference), sampling) for it in items]
    outcomes = run(pipe, provenance, LocalFiles(), out, requests, batch_size)
    prune(out, {o["id"]: o.get("audio") for o in outcomes})
    order = {it.id: n for n, it in enumerate(items)}
    outcomes.sort(key=lambda o: order[o["id"]])
    by_id = {it.id: it for it in items}
    done = [_row(by_id[o["id"]], o["audio"]) for o in outcomes if o["status"] != "failed"]
    failures = [{"item": o["id"], "reason": o["reason"]} for o in outcomes if o["status"] == "failed"]
    return done, failures, sum(o["status"] == "skipped" for o in outcomes)


def _row(item: Item, audio: str) -> dict:
    return {"id": item.id, "prompt": item.prompt, "reference": str(item.reference), "label": item.label, "audio": audio}
