"""The FF++ protocol on your own list: a pairs.csv of (source, target) images or videos.

  source,target                      header optional (then: source first, target second)
  people/anna.jpg,clips/bob.mp4      paths relative to the CSV's folder (or absolute)
  clips/carl.mp4,people/dora.png

Optional third column `swap`: a precomputed swap of that row to score instead of running a
checkpoint; or --swaps DIR, where the swap of a row is DIR/<target stem>_<source stem> with
the target's extension (FF++'s '<target>_<source>' naming). Every distinct file is an
identity of the gallery (its mean embedding over its sampled frames; an image is one
frame), as each original video is in FF++.
"""

import csv
import os
from typing import Optional

from fsjax.eval import errors
from fsjax.eval import media
from fsjax.eval import real_faces


def _rows(path: str) -> list[list[str]]:
  try:
    with open(path, newline='') as f:
      rows = [[c.strip() for c in row] for row in csv.reader(f)]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise errors.EvalInputError(f'cannot read pairs file {path}: {e}') from e
  return [r for r in rows if any(r) and not r[0].startswith('#')]


def _swap_file(swaps_dir: str, target: str, source: str) -> str:
  stem = (f'{os.path.splitext(os.path.basename(target))[0]}_'
          f'{os.path.splitext(os.path.basename(source))[0]}')
  ext = os.path.splitext(target)[1]
  for candidate in [ext] + [e for e in media.VIDEO_EXTENSIONS + media.IMAGE_EXTENSIONS
                            if e != ext.lower()]:
    path = os.path.join(swaps_dir, stem + candidate)
    if os.path.isfile(path):
      return path
  return os.path.join(swaps_dir, stem + ext)  # missing: counted as such


def make_jobs(pairs_csv: str, *, swaps_dir: Optional[str] = None, num_pairs: int = 0
              ) -> tuple[list[real_faces.Job], dict[str, str]]:
  """(jobs, {identity name: media path}) of a pairs.csv (module doc)."""
  if not pairs_csv:
    raise errors.EvalInputError('give --pairs pairs.csv (source,target rows)')
  if not os.path.isfile(pairs_csv):
    raise errors.EvalInputError(f'pairs file not found: {pairs_csv}')
  if swaps_dir is not None and not os.path.isdir(swaps_dir):
    raise errors.EvalInputError(f'--swaps folder not found: {swaps_dir}')
  rows = _rows(pairs_csv)
  columns = {'source': 0, 'target': 1, 'swap': 2}
  if rows and {'source', 'target'} <= {c.lower() for c in rows[0]}:
    header = [c.lower() for c in rows.pop(0)]
    columns = {k: header.index(k) for k in ('source', 'target', 'swap') if k in header}
  if not rows:
    raise errors.EvalInputError(f'{pairs_csv} has no (source, target) rows')
  if num_pairs:
    rows = rows[:int(num_pairs)]
  base = os.path.dirname(os.path.abspath(pairs_csv))
  jobs, identities, names = [], {}, set()
  for line, row in enumerate(rows, 1):
    if len(row) <= max(columns['source'], columns['target']) or not (
        row[columns['source']] and row[columns['target']]):
      raise errors.EvalInputError(f'{pairs_csv}: row {line} needs a source and a target, got '
                                  f'{row}')
    source, target = row[columns['source']], row[columns['target']]
    for name in (source, target):
      identities[name] = os.path.join(base, os.path.expanduser(name))
    swap = None
    if 'swap' in columns and len(row) > columns['swap'] and row[columns['swap']]:
      swap = os.path.join(base, os.path.expanduser(row[columns['swap']]))
    elif swaps_dir is not None:
      swap = _swap_file(swaps_dir, target, source)
    name = (f'{os.path.splitext(os.path.basename(target))[0]}_'
            f'{os.path.splitext(os.path.basename(source))[0]}')
    if name in names:
      name = f'{name}#{line}'
    names.add(name)
    jobs.append(real_faces.Job(name, target, source, swap))
  return jobs, identities
