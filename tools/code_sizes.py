"""The largest modules and functions of the project's code, to watch for modules holding two concerns.

    python tools/code_sizes.py                 # the working tree
    python tools/code_sizes.py --rev 85f0105   # any commit (read with `git show`, nothing checked out)
    python tools/code_sizes.py --top 20 --json

Lines are physical lines; a function's size runs from its ``def`` (decorators excluded) to its last line, and a
method is named ``Class.method``. Written by hand: radon and the like count complexity, not this.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ("seap_model", "flows", "tasks")


def sources(rev: str | None) -> dict[str, str]:
    """{path: text} of every .py file under ``CODE``, from the working tree or from commit ``rev``."""
    if rev is None:
        return {p.relative_to(ROOT).as_posix(): p.read_text() for d in CODE for p in sorted((ROOT / d).rglob("*.py"))}
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, *CODE], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()

    def show(name: str) -> str:
        return subprocess.run(
            ["git", "show", f"{rev}:{name}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout

    return {name: show(name) for name in names if name.endswith(".py")}


def functions(path: str, text: str) -> list[tuple[int, str]]:
    """(lines, "path:Class.name") for every function and method of a module."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((child.end_lineno - child.lineno + 1, f"{path}:{prefix}{child.name}"))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(text, path), "")
    return found


def sizes(rev: str | None, top: int) -> dict:
    files = sources(rev)
    modules = sorted(((len(t.splitlines()), p) for p, t in files.items()), reverse=True)
    funcs = sorted((f for p, t in files.items() for f in functions(p, t)), reverse=True)
    return {
        "rev": rev or "working tree",
        "modules": [{"lines": n, "module": p} for n, p in modules[:top]],
        "functions": [{"lines": n, "function": f} for n, f in funcs[:top]],
        "modules_over_400": sum(n > 400 for n, _ in modules),
        "functions_over_60": sum(n > 60 for n, _ in funcs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="a git commit (default: the working tree)")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = sizes(args.rev, args.top)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"# {result['rev']}: {result['modules_over_400']} modules over 400 lines, "
        f"{result['functions_over_60']} functions over 60 lines"
    )
    print("| lines | module |\n|---|---|")
    print("\n".join(f"| {m['lines']} | {m['module']} |" for m in result["modules"]))
    print("\n| lines | function |\n|---|---|")
    print("\n".join(f"| {f['lines']} | {f['function']} |" for f in result["functions"]))


if __name__ == "__main__":
    main()
