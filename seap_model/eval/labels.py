"""The map from corpus labels to the AudioSet classes YAMNet should name for them (``audioset_labels.csv``)."""

from __future__ import annotations

import csv
import difflib
from pathlib import Path

from seap_model.models.yamnet import audioset_class_names

LABEL_TABLE_PATH = Path(__file__).with_name("audioset_labels.csv")


def load_label_table(path: str | Path = LABEL_TABLE_PATH) -> dict[str, list[str]]:
    """Read ``label,audioset_names`` (names separated by ';') and check every name is a YAMNet class."""
    path = Path(path)
    known = set(audioset_class_names())
    table: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != ["label", "audioset_names"]:
            raise ValueError(f"{path}: expected columns label,audioset_names, got {reader.fieldnames}")
        for row in reader:
            label = row["label"].strip()
            names = [name.strip() for name in row["audioset_names"].split(";") if name.strip()]
            if not label or not names:
                raise ValueError(f"{path}: row {row} needs a label and at least one AudioSet name")
            if label in table:
                raise ValueError(f"{path}: label {label!r} appears twice")
            for name in names:
                if name not in known:
                    close = difflib.get_close_matches(name, known, n=3)
                    raise ValueError(f"{path}: label {label!r}: {name!r} is not a YAMNet class name (close: {close})")
            table[label] = names
    return table
