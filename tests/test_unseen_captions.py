"""The unseen-caption table (evaluation protocol): >= 3 paraphrases per corpus label, none a training caption."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_label_has_three_paraphrases_that_never_occur_in_training():
    """Both shipped corpora (v2, the default, and v1, the tests' fixtures) share one table."""
    training: set[tuple[str, str]] = set()
    for corpus in ("data/sound_events_v2", "data/sound_events"):
        with open(ROOT / corpus / "metadata.csv", newline="", encoding="utf-8") as f:
            training |= {(row["label"], row["caption"]) for row in csv.DictReader(f)}
    labels = {label for label, _ in training}
    with open(ROOT / "data/captions/unseen.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    per_label = Counter(row["label"] for row in rows)
    assert set(per_label) == labels
    assert min(per_label.values()) >= 3
    captions = [row["caption"] for row in rows]
    assert len(set(captions)) == len(captions)
    for row in rows:
        # Training captions are the label captions and their joins ("a dog barking and rain falling"), so a
        # paraphrase must not contain any of them.
        assert not any(c in row["caption"] for _, c in training), row
