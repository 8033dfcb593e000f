"""Generation items: (prompt, reference, intended label) taken from a SERST split or a user's prompts file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from seap_model.data.manifest import read_labels, read_manifest


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
    """Items from a JSONL file of ``{"id", "prompt", "reference"}`` rows (reference relative to the file).

    Malformed rows are returned as failures naming the line, not raised: a batch job skips them.
    """
    path = Path(path)
    items, failures = [], []
    seen: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item_id, prompt, reference = str(row["id"]), row["prompt"], row["reference"]
            if not isinstance(prompt, str) or not isinstance(reference, str):
                raise TypeError("'prompt' and 'reference' must be strings")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            failures.append({"item": f"{path}:{n}", "reason": f"malformed row ({exc.__class__.__name__}: {exc})"})
            continue
        if item_id in seen:
            failures.append({"item": f"{path}:{n}", "reason": f"duplicate id {item_id!r}"})
            continue
        seen.add(item_id)
        items.append(Item(item_id, prompt, path.parent / reference))
    return items, failures
