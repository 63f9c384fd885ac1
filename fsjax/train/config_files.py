"""`get_config()` files (configs/*.py) loaded by path, where absl's --config flag is not used.

Light on imports (only ml_collections configs get executed), so scripts and the benchmark
can load a config without the trainers' dependencies.
"""

import importlib.util
import os

import ml_collections

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(path: str, what: str = 'config') -> ml_collections.ConfigDict:
  """get_config() of the file at `path`, also resolved against the repository root.

  Raises FileNotFoundError naming `what` ('ArcFace config') and the paths tried.
  """
  candidates = [path, os.path.join(REPO_ROOT, path)]
  for candidate in candidates:
    if os.path.isfile(candidate):
      name = os.path.splitext(os.path.basename(candidate))[0]
      spec = importlib.util.spec_from_file_location(f'fsjax_config_{name}', candidate)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return module.get_config()
  raise FileNotFoundError(f'{what} {path!r} not found (tried {candidates})')
