"""Directories that appear complete or not at all: written under a temporary sibling name,
renamed into place when done (evaluation outputs, cached estimators)."""

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_dir(path: str, *, replace: bool = True) -> Iterator[str]:
  """Yields a fresh temporary sibling of `path` to write into; renames it to `path` on
  success, removes it on any exception (`path` is then untouched).

  Args:
    path: the final directory.
    replace: an existing `path` is swapped out for the new one (True) or kept, the new one
      discarded (False: someone else finished the same cached build first).
  """
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + '.partial-', dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make outputs private
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if os.path.exists(path):
    if not replace:
      shutil.rmtree(tmp, ignore_errors=True)
      return
    old = tempfile.mkdtemp(prefix=os.path.basename(path) + '.old-', dir=parent)
    os.rename(path, os.path.join(old, 'previous'))
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.rename(tmp, path)
