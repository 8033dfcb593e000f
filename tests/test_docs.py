"""The docs are what tools/docs.py writes from the committed records: a changed record fails the check, README
stays short, and its install-and-test line is the one CI runs."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import docs  # noqa: E402

README_LIMIT = 12 * 1024  # bytes


def test_committed_docs_are_what_the_generator_writes(capsys):
    assert docs.main(["--check"]) == 0, capsys.readouterr().out


def _copy_tree(tmp_path: Path) -> Path:
    """The docs and every record they are generated from, in a fresh tree."""
    root = tmp_path / "tree"
    for name in ("README.md", "params.yaml", "dvc.lock"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    for folder in ("docs", "outputs", "experiments", "results", *docs.LAYOUT):
        if not (root / folder).exists():
            shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    return root


@pytest.mark.parametrize(
    ("record", "key"),
    [
        ("outputs/pretrain_encoder/metrics.json", ("accuracy",)),
        ("experiments/seeds/decoupled_frames-seed2.json", ("metrics", "swap_style_ratio")),
        ("results/generation.json", ("rtf", "fast batch 8")),
    ],
)
def test_a_changed_record_fails_the_check_until_regenerated(tmp_path, capsys, record, key):
    root = _copy_tree(tmp_path)
    assert docs.main(["--check", "--root", str(root)]) == 0
    data = json.loads((root / record).read_text())
    parent = data
    for part in key[:-1]:
        parent = parent[part]
    parent[key[-1]] = 0.123456
    (root / record).write_text(json.dumps(data))
    assert docs.main(["--check", "--root", str(root)]) == 1
    assert "docs/" in capsys.readouterr().out
    assert docs.main(["--root", str(root)]) == 0  # regenerate: the new value appears, rounded by the script
    assert "0.1235" in "".join(p.read_text() for p in docs.documents(root))
    assert docs.main(["--check", "--root", str(root)]) == 0


def test_a_new_module_docstring_changes_the_layout(tmp_path):
    root = _copy_tree(tmp_path)
    (root / "tools" / "extra.py").write_text('"""A tool that was not there. More text."""\n')
    assert docs.main(["--check", "--root", str(root)]) == 1
    docs.main(["--root", str(root)])
    assert "| `tools/extra.py` | A tool that was not there. |" in (root / "docs" / "development.md").read_text()
    assert "| `tools/` | modules: code_sizes, dag_time, docs, extra, faults |" in (root / "README.md").read_text()


def test_an_unknown_block_names_file_and_line(tmp_path):
    root = _copy_tree(tmp_path)
    (root / "docs" / "bad.md").write_text("# x\n\n<!-- generated: nope -->\n<!-- /generated -->\n")
    with pytest.raises(SystemExit, match=r"docs/bad.md:3: unknown generated block 'nope'"):
        docs.main(["--check", "--root", str(root)])


def test_readme_is_at_most_12_kb():
    assert len((ROOT / "README.md").read_bytes()) <= README_LIMIT


def test_readme_test_command_is_what_ci_runs():
    block = re.search(r"\A```bash\n(.*?)\n```\n", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md must start with the ```bash block of the two commands"
    install, test = block[1].splitlines()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()[-1]
    assert test == ci and install.endswith("dvc repro")


def test_the_stage_times_name_a_later_partial_repro_that_the_lock_comes_from(tmp_path):
    stages = dict.fromkeys(("download", "segment", "cache", "finetune"), 60.0)
    timed = {"stages": stages, "total_seconds": 240.0, "cores": 2, "machine": "x86_64", "commit": "a" * 40}
    (tmp_path / "results").mkdir()
    for path, record in (
        ("results/dag_time.json", timed),
        (docs.SLOWER_RUN, {**timed, "commit": "b" * 40}),
        (docs.LOCK_RUN, timed),
    ):
        (tmp_path / path).write_text(json.dumps(record))
    assert "latest `dvc repro`" not in docs.dag_time(tmp_path)  # the lock is the timed run's: nothing to add
    partial = {
        **timed,
        "stages": {**stages, "download": None, "cache": None},
        "total_seconds": 120.0,
        "commit": "c" * 40,
    }
    (tmp_path / docs.LOCK_RUN).write_text(json.dumps(partial))
    block = docs.dag_time(tmp_path)
    assert "on commit `cccccccccc`: it reran `segment`, `finetune` (2.0 min in all)" in block
    assert "changed since commit `aaaaaaaaaa`, and kept `download`, `cache`" in block
