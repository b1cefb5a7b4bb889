"""The house's import rules: no cycles, no hidden ones, and each package on its own side.

The graph is read from the source (every `import` statement, top level or not),
so a cycle hidden by a function-local import shows here as well; then every
module is imported alone: one fresh process imports them one after another,
dropping every project module before each, so no module leans on one that an
earlier import happened to load (the order cannot matter, so one order is run).
"""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("cube_env", "muzero_jax", "experiments")
# Optional dependencies may be imported lazily inside a function (they are extras).
OPTIONAL = {"ray", "gymnax", "pysubgroup", "psutil", "nevergrad"}
# The Ray fan-out module needs Ray at import: entry points load it only when asked to fan out.
OPTIONAL_MODULES = {"muzero_jax.distributed"}


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _target(name: str) -> str | None:
  """The project module that `name` (a dotted import) loads last, or None if external."""
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name or None


def _local_import_ids(tree: ast.AST) -> set[int]:
  """ids of the import statements inside a function body (run on call, not on import)."""
  return {
    id(node)
    for fn in ast.walk(tree)
    if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
    for node in ast.walk(fn)
    if isinstance(node, ast.Import | ast.ImportFrom)
  }


def _imports(module: str, path: pathlib.Path) -> list[tuple[str, bool]]:
  """(imported project module, at top level?) for every import in `path`."""
  tree = ast.parse(path.read_text(), filename=str(path))
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  local = _local_import_ids(tree)
  out = []
  for node in ast.walk(tree):
    names: list[str] = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
      # `from pkg import sub` imports the submodule pkg.sub when there is one.
      names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    for name in names:
      target = _target(name)
      if target and target != module:
        out.append((target, id(node) not in local))
  return out


def _graph() -> dict[str, set[str]]:
  graph = {m: set() for m in MODULES}
  for module, path in MODULES.items():
    for target, _ in _imports(module, path):
      # Only explicit edges: `import a.b.c` also runs a/__init__, but a package's
      # __init__ re-exporting its own submodules is not a cycle; `from a import name`
      # (a name defined by a/__init__) is an edge to `a` and is one.
      graph[module].add(target)
  return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
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

  sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_cycle_finder_sees_a_cycle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
  assert _cycles(_graph()) == []


def test_no_function_local_project_imports():
  local = [
    (m, t) for m, p in MODULES.items() for t, at_top in _imports(m, p) if not at_top and t not in OPTIONAL_MODULES
  ]
  assert local == []


def test_no_function_local_imports_but_optional_dependencies():
  hidden = []
  for module, path in MODULES.items():
    tree = ast.parse(path.read_text())
    local = _local_import_ids(tree)
    for node in ast.walk(tree):
      if id(node) in local:
        if isinstance(node, ast.Import):
          names = [a.name for a in node.names]
        else:
          names = [f"{node.module}.{a.name}" for a in node.names]
        roots = {n.split(".")[0] for n in names}
        if not (roots <= OPTIONAL or set(names) <= OPTIONAL_MODULES):
          hidden.append((module, node.lineno, sorted(roots)))
  assert hidden == []


def test_sides_stay_apart():
  graph = _graph()
  for module, targets in graph.items():
    roots = {t.split(".")[0] for t in targets}
    if module.startswith("cube_env"):
      assert roots <= {"cube_env"}, module
    if module.startswith("muzero_jax"):
      assert roots <= {"muzero_jax"}, module
  ray_users = sorted(
    m
    for m, p in MODULES.items()
    if any(
      isinstance(n, ast.Import) and any(a.name == "ray" for a in n.names) for n in ast.walk(ast.parse(p.read_text()))
    )
  )
  assert all(m.startswith("muzero_jax.distributed") or m.startswith("muzero_jax.fanout") for m in ray_users), ray_users


def test_every_module_imports_alone():
  names = sorted(MODULES)
  code = (
    "import importlib, sys\n"
    f"for name in {names!r}:\n"
    "  for loaded in [m for m in sys.modules if m.split('.')[0] in {'cube_env', 'muzero_jax', 'experiments'}]:\n"
    "    del sys.modules[loaded]\n"
    "  importlib.import_module(name)\n"
  )
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
