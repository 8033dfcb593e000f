"""What a stage computes from, as content hashes (never timestamps): its code, the params it reads, its data.

* **Code**: a stage depends on the ``seap_model`` modules it really imports, transitively (``ast`` over every
  ``import`` statement, function-level ones included, ``TYPE_CHECKING`` blocks excluded), starting from its
  stage module and ``seap_model/cli.py`` (which runs it). Package data beside an imported module counts too.
* **Inputs**: the values of the params keys the stage declares and the content of its data deps.
* **Outputs**: the content of everything it writes (None where missing).

The runner (``seap <stage>``, the Prefect task in ``tasks/stages.py``) computes ``stage_fingerprint`` once and
passes it to the stage, so no stage imports this module (it reads the stage registry). The Prefect flow keys its
task cache on inputs and outputs; the fine-tune checkpoint is resumed only under the same input fingerprint;
``seap_model.dag`` turns the code into dvc.yaml deps, so DVC decides from the same facts with its own hashes.
Written by hand: no library derives a stage's code from its imports.
"""

from __future__ import annotations

import ast
import hashlib
import json
from functools import cache
from pathlib import Path

from pydantic import BaseModel

from seap_model.config import Params
from seap_model.hashing import file_digest, path_digest
from seap_model.stages import param_value, resolve_path, stage

PACKAGE = "seap_model"
PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
RUNNER = "seap_model.cli"  # every stage is run through it (`seap <stage>`)
# Modules whose function-level imports a stage run never executes: the CLI's other subcommands (one-clip
# generation, `seap dag`) and the package's lazy ``SEAPPipeline`` export for users (library code imports
# ``seap_model.pipeline`` itself). Only their module-level imports count.
EAGER_ONLY = {RUNNER, PACKAGE}


def module_path(module: str) -> Path | None:
    """The file of a ``seap_model`` module (a package's ``__init__.py``), or None if there is none."""
    rel = Path(*module.split("."))
    for candidate in (PROJECT_DIR / rel.with_suffix(".py"), PROJECT_DIR / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@cache
def imports_of(module: str) -> frozenset[str]:
    """The ``seap_model`` modules that ``module`` imports anywhere in its body (not under TYPE_CHECKING; for
    ``EAGER_ONLY`` modules not inside functions)."""
    path = module_path(module)
    if path is None:
        raise ModuleNotFoundError(f"{module}: no such module under {PROJECT_DIR}")
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module in EAGER_ONLY and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.split(".")[0] == PACKAGE)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if child.module.split(".")[0] == PACKAGE:
                    found.add(child.module)
                    # `from seap_model.data import stores` imports a submodule
                    subs = (f"{child.module}.{a.name}" for a in child.names)
                    found.update(sub for sub in subs if module_path(sub))
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return frozenset(found)


def _with_parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def import_closure(*modules: str) -> set[str]:
    """Every ``seap_model`` module that importing ``modules`` runs (parent packages included)."""
    seen: set[str] = set()
    todo = [m for module in modules for m in _with_parents(module)]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += [p for m in imports_of(module) for p in _with_parents(m) if module_path(p)]
    return seen


def _data_files(folder: Path) -> list[Path]:
    """Package data beside modules (e.g. ``eval/audioset_labels.csv``): every non-Python file of the folder."""
    return [p for p in folder.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")]


def code_files(name: str) -> list[str]:
    """The files of stage ``name``'s code, relative to the project, sorted."""
    files: set[Path] = set()
    for module in import_closure(RUNNER, stage(name).module):
        path = module_path(module)
        files.add(path)
        files.update(_data_files(path.parent))
    return sorted(p.relative_to(PROJECT_DIR).as_posix() for p in files)


def _json_value(value) -> object:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def code_fingerprint(name: str) -> str:
    """Content hash of stage ``name``'s code (every file of ``code_files``)."""
    return _digest({f: file_digest(PROJECT_DIR / f) for f in code_files(name)})


def stage_fingerprint(name: str, params: Params) -> dict[str, str]:
    """What stage ``name`` computes from: ``code`` (its modules' content), ``params`` (the values of the keys
    it declares) and ``inputs`` (the content of its data deps). Equal fingerprints, equal results."""
    spec = stage(name)
    values = {key: _json_value(param_value(params, key)) for key in spec.params}
    inputs = {dep: path_digest(resolve_path(dep, params)) for dep in spec.deps}
    return {"code": code_fingerprint(name), "params": _digest(values), "inputs": _digest(inputs)}


def outputs_fingerprint(name: str, params: Params) -> dict[str, str | None]:
    """Content hash of every output of stage ``name`` (None where it is missing)."""
    return {out.path: path_digest(resolve_path(out.path, params)) for out in stage(name).outs}
