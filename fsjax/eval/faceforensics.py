"""The FaceForensics++ layout (Rossler et al. 2019): originals, the official split, swaps.

  DATA/original_sequences/youtube/{raw,c23,c40}/videos/<id>.mp4   the 1000 originals
  DATA/splits/{train,val,test}.json                                [["953", "974"], ...]

A split entry [a, b] stands for the two swaps a_b and b_a, named '<target>_<source>' as in
FF++'s manipulated_sequences/<method>/<compression>/videos/: a_b.mp4 is video a with the
face of video b. `make_jobs` turns a split into fsjax.eval.real_faces jobs (with
precomputed swaps SWAPS/<target>_<source>.mp4 when given); every original video of the
split is an identity of the gallery.
"""

import json
import os
from typing import Optional

from fsjax.eval import errors
from fsjax.eval import real_faces

COMPRESSIONS = ('raw', 'c23', 'c40')
ORIGINALS = os.path.join('original_sequences', 'youtube')


def videos_dir(data: str, compression: str) -> str:
  return os.path.join(data, ORIGINALS, compression, 'videos')


def check_layout(data: str, compression: str, split: str) -> tuple[str, str]:
  """(videos folder, split file), or EvalInputError saying what is missing."""
  if compression not in COMPRESSIONS:
    raise errors.EvalInputError(f'--compression must be one of {", ".join(COMPRESSIONS)}, '
                                f'got {compression!r}')
  if not data:
    raise errors.EvalInputError('give --data DIR, the FaceForensics++ folder')
  if not os.path.isdir(data):
    raise errors.EvalInputError(f'FaceForensics++ folder not found: {data}')
  videos = videos_dir(data, compression)
  if not os.path.isdir(videos):
    have = [c for c in COMPRESSIONS if os.path.isdir(videos_dir(data, c))]
    hint = (f'; it has {", ".join(have)} (pass --compression)' if have else
            '; expected the FF++ layout original_sequences/youtube/<raw|c23|c40>/videos/'
            '<id>.mp4')
    raise errors.EvalInputError(f'{videos} not found{hint}')
  split_file = os.path.join(data, 'splits', f'{split}.json')
  if not os.path.isfile(split_file):
    raise errors.EvalInputError(f'split file not found: {split_file} (FF++ ships '
                                'splits/{train,val,test}.json)')
  return videos, split_file


def read_split(path: str) -> list[tuple[str, str]]:
  """The [[a, b], ...] pairs of an FF++ split file; EvalInputError when malformed or empty."""
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.EvalInputError(f'cannot read split file {path}: {e}') from e
  if not isinstance(data, list) or not all(
      isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, (str, int)) for v in p)
      for p in data):
    raise errors.EvalInputError(f'{path} is not a list of [a, b] video id pairs')
  if not data:
    raise errors.EvalInputError(f'{path} is an empty split: nothing to evaluate')
  return [(str(a), str(b)) for a, b in data]


def make_jobs(data: str, *, compression: str = 'c23', split: str = 'test',
              swaps_dir: Optional[str] = None, num_pairs: int = 0
              ) -> tuple[list[real_faces.Job], dict[str, str]]:
  """(jobs a_b and b_a for each split pair, {video id: original video path}).

  Args:
    data: the FF++ folder.
    compression: 'raw' | 'c23' | 'c40' (the originals read).
    split: splits/<split>.json.
    swaps_dir: folder of precomputed <target>_<source>.mp4 (None: swaps made by a swapper).
    num_pairs: the first N split pairs only (0 = all).
  """
  videos, split_file = check_layout(data, compression, split)
  if swaps_dir is not None and not os.path.isdir(swaps_dir):
    raise errors.EvalInputError(f'--swaps folder not found: {swaps_dir}')
  pairs = read_split(split_file)
  if num_pairs:
    pairs = pairs[:int(num_pairs)]
  jobs, identities = [], {}
  for a, b in pairs:
    for target, source in ((a, b), (b, a)):
      name = f'{target}_{source}'
      swap = os.path.join(swaps_dir, name + '.mp4') if swaps_dir is not None else None
      jobs.append(real_faces.Job(name, target, source, swap))
      for vid in (target, source):
        identities[vid] = os.path.join(videos, vid + '.mp4')
  return jobs, identities
