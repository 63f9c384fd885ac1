"""What `fsjax eval` shows and writes: a small table, eval.json and a grid PNG of sample
swaps, all in one output folder that appears complete or not at all (fsjax.eval.atomic);
its progress line is fsjax.train.metric_logging.CountProgress."""

import json
import os
import shutil
import tempfile
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from fsjax.eval import atomic

RESULT_FILE = 'eval.json'
GRID_FILE = 'eval_grid.png'


def _cell(value: Any, digits: int) -> str:
  if value is None:
    return '-'
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    return str(int(value))
  if isinstance(value, (float, np.floating)):
    return 'nan' if not np.isfinite(value) else f'{float(value):.{digits}f}'
  return str(value)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str], digits: int = 3) -> str:
  """A plain-text table (first column left-aligned, numbers right-aligned)."""
  cells = [[str(h) for h in header]] + [[_cell(v, digits) for v in row] for row in rows]
  widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
  lines = []
  for i, row in enumerate(cells):
    lines.append('  '.join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j])
                           for j, c in enumerate(row)).rstrip())
    if i == 0:
      lines.append('  '.join('-' * w for w in widths))
  return '\n'.join(lines)


def _json_safe(value: Any) -> Any:
  """NaN / inf -> None (strict JSON), numpy scalars and arrays -> Python."""
  if isinstance(value, Mapping):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if isinstance(value, np.ndarray):
    return _json_safe(value.tolist())
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if np.isfinite(value) else None
  return value


def check_output(output_dir: str) -> str:
  """The absolute output folder, after checking that its parent can take it (one clear
  error before any work instead of a failure at the end)."""
  from fsjax.eval import errors  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(os.path.expanduser(output_dir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise errors.EvalInputError(f'--output exists and is not a folder: {path}')
  parent = os.path.dirname(path)
  while not os.path.isdir(parent):
    parent = os.path.dirname(parent)
  if not os.access(parent, os.W_OK):
    raise errors.EvalInputError(f'cannot write the output folder {path} ({parent} is not '
                                'writable)')
  return path


def write_outputs(output_dir: str, result: Mapping[str, Any],
                  grid: Optional[np.ndarray] = None) -> str:
  """Writes eval.json (strict JSON: NaN -> null) and eval_grid.png into `output_dir`.

  Both are written into a temporary sibling folder first. A new `output_dir` is that folder
  renamed; into an existing one (which may hold other files, left alone) each file is
  moved with an atomic rename. Either way no file is ever seen half-written. Returns the
  folder.
  """
  from fsjax.data import image_io  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(output_dir)

  def write(folder):
    with open(os.path.join(folder, RESULT_FILE), 'w') as f:
      json.dump(_json_safe(result), f, indent=2, allow_nan=False)
    if grid is not None and np.size(grid):
      image_io.save_png(os.path.join(folder, GRID_FILE), grid)

  if not os.path.isdir(path):
    with atomic.atomic_dir(path) as tmp:
      write(tmp)
    return path
  tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + '.partial-',
                         dir=os.path.dirname(path))
  try:
    write(tmp)
    for name in sorted(os.listdir(tmp)):
      os.replace(os.path.join(tmp, name), os.path.join(path, name))
    stale = os.path.join(path, GRID_FILE)
    if (grid is None or not np.size(grid)) and os.path.isfile(stale):
      os.remove(stale)  # a previous run's grid would pass for this run's
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return path
