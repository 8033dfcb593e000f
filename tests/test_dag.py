"""The stage registry is the one list of stages: dvc.yaml, the CLI and the Prefect tasks follow it, dvc.yaml's
code deps cover what each stage really imports, and the layers import one way, without cycles."""

from __future__ import annotations

import ast
import json
import modulefinder
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from seap_model import dag
from seap_model.cli import build_parser, main
from seap_model.config import Params
from seap_model.fingerprint import import_closure, module_path, outputs_fingerprint, stage_fingerprint
from seap_model.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "seap_model"


def test_committed_dvc_yaml_is_what_the_registry_renders():
    assert dag.check_dvc_yaml(ROOT / "dvc.yaml") == [], "run `seap dag --write`"
    assert (ROOT / "dvc.yaml").read_text() == dag.render_dvc_yaml()


def test_the_check_fails_on_a_wrong_dvc_yaml(tmp_path):
    good = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    wrong = json.loads(json.dumps(good))
    wrong["stages"]["evaluate"]["deps"].remove("seap_model/pipeline.py")
    wrong["stages"]["finetune"]["params"].remove("vocoder")
    del wrong["stages"]["generate"]
    wrong["stages"]["generate-batch"] = good["stages"]["generate"]
    path = tmp_path / "dvc.yaml"
    path.write_text(yaml.safe_dump(wrong, sort_keys=False))
    problems = "\n".join(dag.check_dvc_yaml(path))
    assert "stage 'evaluate', deps" in problems and "stage 'finetune', params" in problems
    assert "stage 'generate': missing from" in problems and "stage 'generate-batch': not in the registry" in problems
    assert main(["dag", "--check", str(path)]) == 1
    assert main(["dag", "--check", str(ROOT / "dvc.yaml")]) == 0


class _SeapFinder(modulefinder.ModuleFinder):
    """The stdlib's bytecode import scanner (function-level imports included), kept inside seap_model. For the
    CLI and the package ``__init__`` only their module-level code counts: a stage run never calls the other
    subcommands or the lazy ``SEAPPipeline`` export (the documented rule, checked here by other means)."""

    def import_hook(self, name, caller=None, fromlist=None, level=-1):
        if not name.startswith("seap_model"):
            return None
        return super().import_hook(name, caller, fromlist, level)

    def scan_code(self, co, m):
        if m.__name__ in ("seap_model", "seap_model.cli") and co.co_name != "<module>":
            return
        super().scan_code(co, m)


def _stage_modules(spec) -> set[str]:
    finder = _SeapFinder(path=[str(ROOT)])
    finder.import_hook(spec.module)
    finder.import_hook("seap_model.cli")  # `seap <stage>` runs through the CLI
    return set(finder.modules)


def _module_file(name: str) -> str:
    rel = Path(*name.split("."))
    path = ROOT / rel.with_suffix(".py") if (ROOT / rel.with_suffix(".py")).is_file() else ROOT / rel / "__init__.py"
    return path.relative_to(ROOT).as_posix()


def missing_code_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """Per stage, the seap_model files it imports (found independently of seap_model.fingerprint: bytecode
    scanning of the stage module, and a real import of the CLI) that dvc.yaml's deps do not cover."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    missing = {}
    for spec in STAGES:
        deps = stages.get(spec.name, {}).get("deps", [])
        files = {_module_file(m) for m in _stage_modules(spec)}
        missing[spec.name] = sorted(f for f in files if not any(f == d or f.startswith(d + "/") for d in deps))
    return missing


def test_dvc_yaml_code_deps_cover_every_module_each_stage_imports(tmp_path):
    assert missing_code_deps(ROOT / "dvc.yaml") == {spec.name: [] for spec in STAGES}
    # ... and the check notices when one is left out
    wrong = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    wrong["stages"]["generate"]["deps"].remove("seap_model/pipeline.py")
    wrong["stages"]["finetune"]["deps"].remove("seap_model/models")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(wrong))
    missing = missing_code_deps(tmp_path / "dvc.yaml")
    assert missing["generate"] == ["seap_model/pipeline.py"]
    assert "seap_model/models/unet.py" in missing["finetune"] and "seap_model/models/adapter.py" in missing["finetune"]


def test_a_directory_code_dep_hashes_the_same_with_or_without_bytecode_caches():
    # dvc.yaml names whole packages (seap_model/models); DVC hashes every file under them that .dvcignore keeps,
    # so a machine where Python wrote __pycache__/ would otherwise see those stages as changed.
    directories = {
        d
        for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
        for d in stage.get("deps", [])
        if (ROOT / d).is_dir() and d.startswith("seap_model/")
    }
    assert "seap_model/models" in directories
    probes = [f"{d}/__pycache__/unet.cpython-311.pyc" for d in sorted(directories)] + ["seap_model/models/unet.py"]
    found = subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), "check-ignore", *probes], cwd=ROOT, capture_output=True, text=True
    )
    assert found.stdout.split() == probes[:-1]


def test_the_fingerprint_follows_the_same_imports():
    for spec in STAGES:
        assert _stage_modules(spec) <= import_closure("seap_model.cli", spec.module), spec.name


def test_stage_name_is_cli_verb_prefect_task_and_module():
    sys.path.insert(0, str(ROOT))
    from tasks.stages import TASKS

    verbs = set(build_parser()._subparsers._group_actions[0].choices)
    for spec in STAGES:
        assert spec.name in verbs
        assert TASKS[spec.name].name == spec.name
        assert module_path(spec.module) == PACKAGE / "stages" / f"{spec.name.replace('-', '_')}.py"
    assert list(TASKS) == [s.name for s in STAGES]
    stage_files = {p.stem for p in (PACKAGE / "stages").glob("*.py")} - {"__init__"}
    assert stage_files == {s.function for s in STAGES}  # a module per stage, nothing else in the folder
    assert not {p.stem for p in PACKAGE.glob("*.py")} & {s.function for s in STAGES}  # no stage code at the top


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


# Every package and top-level module of seap_model, top layer first: a module may import its own package and
# the layers below its own, never one above it nor another unit of its own layer. `seap_model` is the package's
# __init__ (the version and the lazy SEAPPipeline export).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),  # `seap`: runs stages (with their fingerprint), the page, `seap dag`
    ("serve", "dag"),  # the web page; dvc.yaml from the registry
    ("fingerprint",),  # what a stage computes from, read from the stage registry
    ("stages",),  # the registry and the stage entry points: they only orchestrate the library below
    ("batch",),  # the one batch engine (generate stage, batch jobs): items, storage, outputs and sidecars
    ("training",),  # building, training and saving the models (reads evaluation helpers to embed references)
    ("eval",),  # protocols, evaluators, scores, tables, the report
    ("generation",),  # generation from items: seeds, reference checks, batches
    ("seap_model",),
    ("pipeline",),  # the SEAPPipeline users load
    ("samplers",),
    ("data", "models"),  # SERST building; the networks
    ("plots", "progress", "hashing", "flags", "precision", "rows"),  # rows: reading user rows without crashing
    ("config",),
    ("audio",),
    ("errors",),
)


def _unit(module: str) -> str:
    """The package or top-level module of seap_model that ``module`` belongs to (``seap_model.eval.run`` ->
    ``eval``; ``seap_model`` itself -> ``seap_model``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import in ``graph`` (module -> the seap_model modules it imports) that the layer rule forbids."""
    rank = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
    wrong = []
    for module, imported in sorted(graph.items()):
        for other in sorted(imported):
            a, b = _unit(module), _unit(other)
            if a != b and rank[b] <= rank[a]:
                where = "the same layer as" if rank[b] == rank[a] else "a layer above"
                wrong.append(f"{module} imports {other}: {b} is in {where} {a}")
    return wrong


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Every module under ``package`` -> the modules of the package it imports (anywhere in its body)."""
    root = package.parent
    modules = {
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p for p in package.rglob("*.py")
    }
    return {m: {i for i in _imports(p) if i in modules} for m, p in modules.items()}


def test_layers_point_one_way_and_there_are_no_cycles():
    graph = import_graph()
    placed = [unit for layer in LAYERS for unit in layer]
    units = {_unit(m) for m in graph}
    assert len(placed) == len(set(placed)), "a unit is placed twice in LAYERS"
    assert units - set(placed) == set(), "packages or modules the layer rule does not place (add them to LAYERS)"
    assert set(placed) - units == set(), "LAYERS places packages or modules that do not exist"
    assert upward_imports(graph) == []
    for module in graph:  # the library never imports Prefect or DVC
        path = module_path(module)
        assert not {i.split(".")[0] for i in _imports(path)} & {"prefect", "dvc"}, module

    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != "open", "import cycle: " + " -> ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_the_layer_rule_names_an_upward_import_and_a_peer_import():
    graph = {
        "seap_model.stages.finetune": {"seap_model.fingerprint", "seap_model.training.system"},
        "seap_model.training.system": {"seap_model.pipeline"},
        "seap_model.data.compose": {"seap_model.models.codec"},
    }
    assert upward_imports(graph) == [
        "seap_model.data.compose imports seap_model.models.codec: models is in the same layer as data",
        "seap_model.stages.finetune imports seap_model.fingerprint: fingerprint is in a layer above stages",
    ]


def test_seap_dag_prints_every_stage_with_its_module_params_and_outs(capsys):
    assert main(["dag"]) == 0
    out = capsys.readouterr().out
    for spec in STAGES:
        assert f"{spec.name}: " in out
        assert f"seap_model/stages/{spec.function}.py:{spec.function}" in out
        assert ", ".join(spec.params) in out
    assert "${finetune.out_dir}" in out
    assert main(["dag", "--params", str(ROOT / "params.yaml")]) == 0
    assert "models/pipeline" in capsys.readouterr().out


def test_fingerprints_change_with_content_not_timestamps(tmp_path):
    serst = tmp_path / "serst"
    (serst / "audio").mkdir(parents=True)
    (serst / "audio" / "a.wav").write_bytes(b"one")
    params = Params.model_validate({"data": {"serst_dir": str(serst)}, "codec": {"out_dir": str(tmp_path / "codec")}})
    before = stage_fingerprint("pretrain-vae", params)
    (serst / "audio" / "a.wav").touch()
    assert stage_fingerprint("pretrain-vae", params) == before  # a touch is not a change
    (serst / "audio" / "a.wav").write_bytes(b"two")
    changed = stage_fingerprint("pretrain-vae", params)
    assert changed["inputs"] != before["inputs"] and changed["code"] == before["code"]
    other = Params.model_validate({**params.model_dump(), "codec": {**params.codec.model_dump(), "steps": 7}})
    assert stage_fingerprint("pretrain-vae", other)["params"] != changed["params"]
    assert outputs_fingerprint("pretrain-vae", params)["${codec.out_dir}"] is None
    shutil.copytree(serst, tmp_path / "codec")
    assert outputs_fingerprint("pretrain-vae", params)["${codec.out_dir}"] is not None
