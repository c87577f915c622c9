#!/usr/bin/env python3
"""The environment reference of docs/operations/deployment.md, generated from the code: every
variable that settings/base.py, settings/production.py and gunicorn.conf.py read, with its
type, its default, whether production requires it, and the files that read it (the comment
above the line that reads it says what it is for).

Stdlib only (ast): it reads the files, imports nothing.

  python3 scripts/env_reference.py           print the table
  python3 scripts/env_reference.py --write   put it into docs/operations/deployment.md,
                                              between its env-reference markers

tests/test_env_reference.py fails when the document's table is not this script's output.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("settings/base.py", "settings/production.py", "gunicorn.conf.py")
DOC = ROOT / "docs" / "operations" / "deployment.md"
START, END = "<!-- env-reference:start -->", "<!-- env-reference:end -->"
TYPES = {"str": "string", "bool": "boolean", "int": "integer", "float": "number",
         "list": "comma-separated list", "dict": "KEY=VALUE,…", "db": "database URL"}


@dataclass
class Variable:
    name: str
    kind: str
    defaults: dict[str, str]  # file → default read there ("" none)


def _default(call: ast.Call, position: int) -> str:
    for keyword in call.keywords:
        if keyword.arg == "default":
            return ast.unparse(keyword.value)
    if len(call.args) > position:
        return ast.unparse(call.args[position])
    return ""


def _required_in_production() -> list[str]:
    tree = ast.parse((ROOT / "settings" / "production.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == \
                "REQUIRED_ENVIRONMENT":
            return list(ast.literal_eval(node.value))
    return []


def collect() -> dict[str, Variable]:
    found: dict[str, Variable] = {}
    for source in SOURCES:
        tree = ast.parse((ROOT / source).read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)
                    and first.value.isupper()):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                    and func.value.id == "env" and func.attr in TYPES:
                kind, default = TYPES[func.attr], _default(node, 1)
            elif isinstance(func, ast.Attribute) and ast.unparse(func.value) == "os.environ" \
                    and func.attr in ("get", "setdefault"):
                kind, default = "string", _default(node, 1)
            elif isinstance(func, ast.Name) and func.id == "_int":  # gunicorn.conf.py's
                kind, default = "integer", _default(node, 1)
            else:
                continue
            variable = found.setdefault(first.value, Variable(first.value, kind, {}))
            if not variable.defaults.get(source):
                variable.defaults[source] = default
    return found


def render() -> str:
    required = _required_in_production()
    variables = collect()
    for name in required:
        variables.setdefault(name, Variable(name, "string", {"settings/production.py": ""}))
    lines = ["| variable | type | default | production | read in |",
             "|---|---|---|---|---|"]
    for name in sorted(variables):
        v = variables[name]
        given = {d for d in v.defaults.values() if d}
        if name in required:
            default = "none in production"
        elif len(given) > 1:  # e.g. SANDBOXES_ENABLED: on in base.py, off in production
            default = ", ".join(f"`{d}` ({Path(f).stem})" for f, d in v.defaults.items() if d)
        else:
            default = f"`{given.pop()}`" if given else "none"
        default = default.replace("|", "\\|")
        need = "**required**" if name in required else "optional"
        where = ", ".join(f"`{f}`" for f in v.defaults)
        lines.append(f"| `{name}` | {v.kind} | {default} | {need} | "
                     f"{where} |")
    return "\n".join(lines) + "\n"


def write() -> None:
    text = DOC.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{START}\n{render()}{END}{tail}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        sys.stdout.write(render())
