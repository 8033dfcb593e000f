"""dvc.yaml derived from the stage registry: ``seap dag`` prints the DAG, ``--write`` writes dvc.yaml and
``--check`` (like the tests) fails when the committed file and the registry disagree.

A stage's code deps are the files ``seap_model.fingerprint.code_files`` finds by following its imports,
written as a folder where the stage imports all of it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from seap_model.config import Params
from seap_model.fingerprint import PACKAGE_DIR, PROJECT_DIR, code_files, module_path
from seap_model.hashing import IGNORED
from seap_model.stages import STAGES, TOP_LEVEL_PLOTS, Stage, resolve_path

DVC_HEADER = """\
# The seap DAG, written by `seap dag --write` from the stage registry (seap_model/stages/__init__.py) and the
# imports of each stage's code; do not edit by hand: `seap dag --check` and the tests fail when they disagree.
# Each stage runs `seap <stage>`, i.e. the function of that name in seap_model/stages/<stage>.py ('-' -> '_').
"""


def _all_files(folder: Path) -> set[str]:
    return {
        p.relative_to(PROJECT_DIR).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not IGNORED & set(p.parts) and p.suffix != ".pyc"
    }


def code_deps(name: str) -> list[str]:
    """Stage ``name``'s code as dvc.yaml deps: a folder where the stage imports all of it, else its files."""
    files = set(code_files(name))
    folders = sorted({p.parent for f in files for p in [PROJECT_DIR / f]}, key=lambda p: len(p.parts))
    deps = set(files)
    for folder in folders:  # shallowest first: a whole package swallows its subpackages
        inside = _all_files(folder)
        if folder != PACKAGE_DIR and inside and inside <= files:
            rel = folder.relative_to(PROJECT_DIR).as_posix()
            if not any(rel.startswith(d + "/") for d in deps if (PROJECT_DIR / d).is_dir()):
                deps = {d for d in deps if not d.startswith(rel + "/")} | {rel}
    return sorted(deps)


def dvc_stage(spec: Stage) -> dict:
    entry: dict = {"cmd": f"seap {spec.name}", "deps": [*spec.deps, *code_deps(spec.name)], "params": list(spec.params)}
    groups = {"out": "outs", "metric": "metrics", "plot": "plots"}
    for out in spec.outs:
        options: dict = dict(out.plot)
        if not out.cache:
            options["cache"] = False
        if out.persist:
            options["persist"] = True
        entry.setdefault(groups[out.kind], []).append({out.path: options} if options else out.path)
    return entry


def render_dvc_yaml() -> str:
    """dvc.yaml for the registry, as ``seap dag --write`` writes it."""
    body = {"stages": {s.name: dvc_stage(s) for s in STAGES}, "plots": TOP_LEVEL_PLOTS}
    return DVC_HEADER + yaml.safe_dump(body, sort_keys=False, width=120)


def check_dvc_yaml(path: str | Path = "dvc.yaml") -> list[str]:
    """Differences between ``path`` and what the registry renders (empty: they agree)."""
    path = Path(path)
    if not path.is_file():
        return [f"{path}: missing (write it with `seap dag --write`)"]
    have = yaml.safe_load(path.read_text()) or {}
    want = yaml.safe_load(render_dvc_yaml())
    problems = []
    for name in sorted(set(have.get("stages", {})) | set(want["stages"])):
        a, b = have.get("stages", {}).get(name), want["stages"].get(name)
        if a is None or b is None:
            problems.append(f"stage {name!r}: {'missing from' if a is None else 'not in the registry, but in'} {path}")
            continue
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                problems.append(f"stage {name!r}, {key}: {path} has {a.get(key)!r}, the registry says {b.get(key)!r}")
    if have.get("plots") != want.get("plots"):
        problems.append(f"top-level plots differ from the registry's in {path}")
    return problems


def describe(params: Params | None = None) -> str:
    """The stages with their modules, params, data deps and outputs (``seap dag``)."""
    lines = []
    for spec in STAGES:
        path = module_path(spec.module).relative_to(PROJECT_DIR).as_posix()
        lines.append(f"{spec.name}: {spec.help}")
        lines.append(f"  code:    {path}:{spec.function} (+ {len(code_files(spec.name)) - 1} imported files)")
        lines.append(f"  params:  {', '.join(spec.params)}")
        show = (lambda p: resolve_path(p, params)) if params is not None else (lambda p: p)
        lines.append(f"  deps:    {', '.join(show(d) for d in spec.deps) or '-'}")
        lines.append(f"  outs:    {', '.join(show(o.path) for o in spec.outs)}")
    return "\n".join(lines)
