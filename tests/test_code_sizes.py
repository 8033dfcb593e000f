"""tools/code_sizes.py counts each function and method from its def to its last line, and reads a commit too."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import code_sizes

SOURCE = """
def top(a):
    return a


class Box:
    @property
    def size(self):
        x = 1
        return x

    def nested(self):
        def inner():
            return 2

        return inner()
"""


def test_functions_and_methods_are_counted_from_def_to_last_line():
    found = dict((name, lines) for lines, name in code_sizes.functions("m.py", SOURCE))
    assert found == {"m.py:top": 2, "m.py:Box.size": 3, "m.py:Box.nested": 5, "m.py:Box.nested.inner": 2}


def test_a_commit_is_measured_without_checking_it_out():
    head = code_sizes.sizes("HEAD", top=3)
    assert head["rev"] == "HEAD" and len(head["modules"]) == len(head["functions"]) == 3
    assert all(m["module"].startswith(code_sizes.CODE) for m in head["modules"])
    assert head["modules"][0]["lines"] >= head["modules"][-1]["lines"]
