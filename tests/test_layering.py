"""Import direction: the IR, the ops and the rewrite engine sit below the frontends, the
substitution generator, the search and the passes, and import none of them (also not inside a
function). What runs an opaque aten node is registered by the PyTorch frontend
(``ops.opaque.register_runner``); what an ONNX op type means at import is the frontend's."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOWER = ("compiler/ir", "compiler/ops", "compiler/rewrite")
UPPER = ("frontends", "search", "subst", "passes")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, relative ones resolved."""
    pkg = ["graphopt"] + list(path.relative_to(ROOT / "compiler").parent.parts)
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out += [(node.lineno, f"{mod}.{a.name}" if not node.module else mod)
                    for a in node.names]
    return out


@pytest.mark.parametrize("folder", LOWER)
def test_lower_layers_do_not_import_upper_ones(folder: str) -> None:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, mod in _imports(path):
            parts = mod.split(".")
            if parts[0] == "graphopt" and len(parts) > 1 and parts[1] in UPPER:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)
