"""The package layout stays as README "Layout" draws it: imports point down the layer order
commands > eval, bench > swap > aei > identity > train, data, faces > models, with no cycles,
and the library never imports tests or edits sys.path."""

import ast
import os
import sys

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'fsjax')
LAYERS = [('commands', 'main'), ('eval', 'bench'), ('swap',), ('aei',), ('identity',),
          ('train', 'data', 'faces'), ('models',)]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, str]:
  """'fsjax.aei.trainer' -> path, for every .py file of the package."""
  found = {}
  root = os.path.dirname(PACKAGE)
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        module = os.path.relpath(path, root)[:-3].replace(os.sep, '.')
        found[module.removesuffix('.__init__')] = path
  return found


def _imported_names(path: str, module: str):
  """Every module name an `import` / `from ... import` in the file can refer to (lazy ones
  inside functions included)."""
  package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parts = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(parts + ([base] if base else []))
      yield base
      yield from (f'{base}.{alias.name}' for alias in node.names)


def _graph() -> dict[str, set[str]]:
  """module -> the package modules it imports (a name resolves to its longest module prefix)."""
  modules = _modules()
  edges = {m: set() for m in modules}
  for module, path in modules.items():
    for name in _imported_names(path, module):
      while name and name not in modules:
        name = name.rpartition('.')[0]
      if name and name != module and not module.startswith(name + '.'):
        edges[module].add(name)
  return edges


def _layer(module: str) -> str | None:
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else None


def test_every_module_is_in_a_layer():
  outside = [m for m in _modules() if m != 'fsjax' and _layer(m) not in RANK]
  assert not outside, f'modules outside the layers of README "Layout": {outside}'


def test_imports_point_down_the_layer_order():
  upward = [f'{m} -> {t}' for m, targets in _graph().items() for t in sorted(targets)
            if _layer(m) in RANK and _layer(t) in RANK and RANK[_layer(t)] < RANK[_layer(m)]]
  assert not upward, 'imports pointing up the layer order:\n' + '\n'.join(sorted(upward))


def test_no_import_cycles():
  edges = _graph()
  state: dict[str, int] = {}  # 1 = on the current path, 2 = done
  cycles = []

  def visit(module, path):
    state[module] = 1
    for target in sorted(edges[module]):
      if state.get(target) == 1:
        cycles.append(' -> '.join(path[path.index(target):] + [target]))
      elif target not in state:
        visit(target, path + [target])
    state[module] = 2

  for module in sorted(edges):
    if module not in state:
      visit(module, [module])
  assert not cycles, 'import cycles:\n' + '\n'.join(cycles)


def test_library_never_imports_tests_or_edits_sys_path():
  for module, path in _modules().items():
    text = open(path).read()
    assert 'sys.path.insert' not in text and 'sys.path.append' not in text, module
    names = list(_imported_names(path, module))
    assert not [n for n in names if n == 'tests' or n.startswith('tests.')], module


@pytest.mark.parametrize('bad', [('fsjax.models.aad', 'fsjax.swap.swapper')])
def test_the_checks_catch_an_upward_import(tmp_path, bad, monkeypatch):
  """The walker itself: a models module importing swap is reported (and a cycle too)."""
  pkg = tmp_path / 'fsjax'
  (pkg / 'models').mkdir(parents=True)
  (pkg / 'swap').mkdir()
  for init in (pkg, pkg / 'models', pkg / 'swap'):
    (init / '__init__.py').write_text('')
  (pkg / 'models' / 'aad.py').write_text('from fsjax.swap import swapper\n')
  (pkg / 'swap' / 'swapper.py').write_text('from fsjax.models import aad\n')
  monkeypatch.setattr(sys.modules[__name__], 'PACKAGE', str(pkg))
  edges = _graph()
  assert bad[1] in edges[bad[0]] and bad[0] in edges[bad[1]]
  with pytest.raises(AssertionError, match='fsjax.models.aad -> fsjax.swap.swapper'):
    test_imports_point_down_the_layer_order()
  with pytest.raises(AssertionError, match='import cycles'):
    test_no_import_cycles()
