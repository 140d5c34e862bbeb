"""The import graph of the ``st4r_lite`` package, measured from its source (nothing is imported).

``python tools/module_graph.py`` (or ``python -m tools.module_graph`` from the repository root) prints:
  - the number of modules and their lines,
  - the import cycles between the package's modules (strongly connected components of the graph that has an
    edge A → B whenever A imports B, at the top of the file *or* inside a function),
  - the imports of package modules written inside functions (the usual way to dodge a cycle), and the other
    imports inside functions (optional heavy dependencies are allowed there),
  - the largest files.

``tests/test_architecture.py`` uses the same functions to fail on a cycle, on a file over 400 lines and on an
import that goes against the layer order of ``docs/architecture.md``.
"""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "st4r_lite"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


@dataclass
class Module:
    """One ``.py`` file of the package: its dotted name, path, line count and the package modules it imports."""

    name: str
    path: Path
    lines: int
    top_imports: set[str] = field(default_factory=set)  # package modules imported at module level
    function_imports: list[tuple[int, str]] = field(default_factory=list)  # (line, module) inside a def
    other_function_imports: list[tuple[int, str]] = field(default_factory=list)  # non-package, inside a def


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom | ast.Import, current: str, is_package: bool, known: set[str]) -> list[str]:
    """The package modules an import statement loads (``from a import b`` counts ``a.b`` when it is a module)."""
    out: list[str] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                out.append(alias.name)
        return [m for m in out if m in known]
    base = node.module or ""
    if node.level:
        pkg = current if is_package else current.rpartition(".")[0]
        for _ in range(node.level - 1):
            pkg = pkg.rpartition(".")[0]
        base = f"{pkg}.{base}" if base else pkg
    if not (base == PACKAGE or base.startswith(PACKAGE + ".")):
        return []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in known else base)
    return [m for m in out if m in known]


def scan(root: Path = ROOT) -> dict[str, Module]:
    """Every module of the package under ``root`` (vendored files excluded) with its imports."""
    paths = sorted(p for p in root.rglob("*.py") if "_vendor" not in p.parts)
    known = {module_name(p, root) for p in paths}
    mods: dict[str, Module] = {}
    for p in paths:
        name = module_name(p, root)
        text = p.read_text(encoding="utf-8")
        mod = Module(name, p, len(text.splitlines()))
        tree = ast.parse(text, filename=str(p))
        is_pkg = p.name == "__init__.py"

        def visit(node: ast.AST, in_function: bool, mod: Module = mod, name: str = name, is_pkg: bool = is_pkg) -> None:
            for child in ast.iter_child_nodes(node):
                inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    targets = _resolve(child, name, is_pkg, known)
                    if in_function:
                        if targets:
                            mod.function_imports += [(child.lineno, t) for t in targets]
                        else:
                            what = (child.module or "") if isinstance(child, ast.ImportFrom) else child.names[0].name
                            mod.other_function_imports.append((child.lineno, what))
                    else:
                        mod.top_imports.update(targets)
                visit(child, inside)

        visit(tree, False)
        mod.top_imports.discard(name)
        mods[name] = mod
    return mods


def edges(mods: dict[str, Module]) -> dict[str, set[str]]:
    """A → {B}: A imports B anywhere (top level or inside a function); self-imports dropped."""
    return {n: ({*m.top_imports, *(t for _, t in m.function_imports)} - {n}) for n, m in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(out, key=lambda c: (-len(c), c))


def report(root: Path = ROOT, largest: int = 10) -> str:
    mods = scan(root)
    graph = edges(mods)
    cyc = cycles(graph)
    fn_internal = [(n, line, t) for n, m in mods.items() for line, t in m.function_imports]
    fn_other = [(n, line, t) for n, m in mods.items() for line, t in m.other_function_imports]
    lines = [f"modules: {len(mods)} ({sum(m.lines for m in mods.values())} lines; "
             f"{sum(len(g) for g in graph.values())} import edges between them)",
             f"import cycles: {len(cyc)}"]
    lines += [f"  {' <-> '.join(c)}" for c in cyc]
    lines.append(f"package imports inside functions: {len(fn_internal)}")
    per_mod: dict[str, int] = {}
    for n, _, _ in fn_internal:
        per_mod[n] = per_mod.get(n, 0) + 1
    lines += [f"  {n}: {k}" for n, k in sorted(per_mod.items(), key=lambda x: (-x[1], x[0]))]
    others = sorted({t.split(".")[0] for _, _, t in fn_other})
    lines.append(f"other imports inside functions: {len(fn_other)} ({', '.join(others)})")
    big = sorted(mods.values(), key=lambda m: -m.lines)[:largest]
    lines.append(f"largest files (limit 400 lines; over it: {sum(m.lines > 400 for m in mods.values())}):")
    lines += [f"  {m.lines:5d}  {m.path.relative_to(root.parent)}" for m in big]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(ROOT), help="the package folder (default: this repository's st4r_lite)")
    p.add_argument("--largest", type=int, default=10, help="how many of the largest files to list")
    args = p.parse_args(argv)
    print(report(Path(args.root).resolve(), args.largest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
