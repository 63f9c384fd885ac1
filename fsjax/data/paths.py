"""User paths: absolute at the boundary, outputs that never overlap inputs, atomic output folders.

Every command and API function that writes resolves its paths with `absolute` (Orbax needs
absolute paths), refuses an output that equals, contains or lies inside one of its inputs
(`check_disjoint`), replaces an existing output folder only when it is an earlier output of
the same kind, recognised by its marker file (`check_output_dir`), and writes the folder
under a temporary sibling that is renamed into place when complete (`atomic_dir`).
New folders and files get the permissions the umask allows, like any tool's.
"""

import contextlib
import os
import secrets
import shutil
from typing import Iterator, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]


class OutputError(ValueError):
  """An output that would overwrite or delete something it must not (message for the user)."""


def absolute(path: PathLike) -> str:
  """The absolute form of a user path ('~' expanded); symlinks are kept."""
  return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _real(path: PathLike) -> str:
  return os.path.realpath(absolute(path))


def _inside(path: str, folder: str) -> bool:
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def overlap(output: PathLike, inputs: Sequence[PathLike]) -> Optional[tuple[str, str]]:
  """(input, relation) for the first input `output` equals, contains or lies inside, else None.

  Compared after resolving symlinks, so a link to an input counts as that input.
  """
  out = _real(output)
  for item in inputs:
    path = _real(item)
    if out == path:
      return os.fspath(item), 'is'
    if _inside(path, out):
      return os.fspath(item), 'contains'
    if _inside(out, path):
      return os.fspath(item), 'lies inside'
  return None


def check_disjoint(output: PathLike, inputs: Sequence[PathLike], what: str = 'output') -> None:
  """Raises OutputError when `output` equals, contains or lies inside one of `inputs`."""
  found = overlap(output, inputs)
  if found:
    item, relation = found
    raise OutputError(f'{what} {absolute(output)} {relation} the input {absolute(item)}: '
                      f'writing it could destroy the input; choose another {what}, outside '
                      'the inputs')


def check_output_dir(output: PathLike, inputs: Sequence[PathLike], *, marker: str, kind: str,
                     overwrite: bool, flag: str = '--overwrite') -> str:
  """The absolute output folder, after refusing any output that could lose a user's files.

  Args:
    output: the folder to write.
    inputs: what the command reads (files or folders); the output must not overlap them.
    marker: the file that every output of this kind holds (e.g. 'swapper.json').
    kind: what the output is, for messages ('export', 'identity checkpoint').
    overwrite: whether the user asked to replace an existing output.
    flag: how the user asks (for messages: '--overwrite' or 'overwrite=True').

  Raises:
    OutputError: the output overlaps an input, is a file, exists without `overwrite`, or
      exists and is not an earlier output of this kind (no `marker` in it).
  """
  out = absolute(output)
  check_disjoint(out, inputs)
  if not os.path.lexists(out):
    return out
  if not os.path.isdir(out):
    raise OutputError(f'output {out} exists and is not a folder; choose another output')
  if not os.listdir(out):
    return out  # an empty folder (made by the user for it): nothing to lose
  if not overwrite:
    raise OutputError(f'output directory exists: {out} (pass {flag} to replace an earlier '
                      f'{kind})')
  if not os.path.isfile(os.path.join(out, marker)):
    raise OutputError(f'output {out} is not an earlier {kind} (it has no {marker}); refusing '
                      'to replace it: choose another output')
  return out


@contextlib.contextmanager
def atomic_dir(output: PathLike) -> Iterator[str]:
  """Yields a new empty folder beside `output`; renamed to `output` when the block completes.

  An existing `output` (checked by the caller, see check_output_dir) is replaced; on any
  error the temporary folder is deleted and `output` is left as it was.
  """
  out = absolute(output)
  parent, name = os.path.split(out)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f'.{name}.tmp-{secrets.token_hex(4)}')
  os.mkdir(tmp)  # mode 0o777 & ~umask (tempfile.mkdtemp would force 0o700)
  try:
    yield tmp
    if os.path.lexists(out):
      old = os.path.join(parent, f'.{name}.old-{secrets.token_hex(4)}')
      os.rename(out, old)
      os.rename(tmp, out)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def umask_mode(mode: int = 0o666) -> int:
  """`mode` with the process umask applied (what open() gives a new file)."""
  try:  # Linux: read it without changing it (os.umask(0) would race with other threads)
    with open('/proc/self/status') as f:
      mask = next(int(line.split()[1], 8) for line in f if line.startswith('Umask:'))
  except (OSError, StopIteration, ValueError):
    mask = os.umask(0)
    os.umask(mask)
  return mode & ~mask


def new_file(path: PathLike) -> str:
  """Gives `path` (a file from tempfile.mkstemp, created 0o600) the umask's permissions."""
  os.chmod(path, umask_mode())
  return os.fspath(path)
