"""Small helpers shared by the fsjax TFDS builders: PNG bytes, array_record by default, and
an ordered process-parallel map.

The builders yield encoded PNG bytes so that TFDS writes and reads them without TensorFlow.
"""

import collections
import concurrent.futures
import multiprocessing
import os
import sys
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

ARRAY_RECORD = 'array_record'


def encode_png(image: np.ndarray) -> bytes:
  """uint8 [H, W, 3] RGB or [H, W, 1] grey -> PNG bytes (zlib level 1: fast, ~5 KB per 64 px
  face)."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f'expected uint8 [H, W, 3] or [H, W, 1], got {image.dtype} {image.shape}')
  ok, buf = cv2.imencode('.png', np.ascontiguousarray(image[..., ::-1]),
                         [cv2.IMWRITE_PNG_COMPRESSION, 1])
  if not ok:
    raise ValueError('PNG encoding failed')
  return buf.tobytes()


def prefer_array_record(builder, file_format) -> None:
  """Makes array_record the default file format of a builder whose data is not prepared yet.

  Called from a builder's __init__ after the base class: an explicit file_format (for example
  `tfds build --file_format=tfrecord`) and the format of already prepared data both win.
  """
  if file_format is None and not builder.info.initialized:
    builder.info.set_file_format(ARRAY_RECORD, override=True)


def default_num_workers() -> int:
  """Worker processes for CPU-bound record making: the CPU count, at most 8."""
  return max(1, min(8, os.cpu_count() or 1))


def _mp_context():
  """'fork' (cheap, needs no `__main__` guard) unless JAX or TensorFlow is loaded: their
  runtime threads make forking unsafe, so then 'spawn'."""
  if ('fork' in multiprocessing.get_all_start_methods() and 'jax' not in sys.modules
      and 'tensorflow' not in sys.modules):
    return multiprocessing.get_context('fork')
  return multiprocessing.get_context('spawn')


def ordered_map(fn: Callable, tasks: Sequence[tuple], num_workers: int) -> Iterator:
  """Yields fn(*task) for each task, in order; with num_workers > 1 in worker processes,
  keeping at most 2 * num_workers tasks in flight. fn must be importable (module level).

  With the 'spawn' start method (multi-threaded callers), a calling script needs the usual
  `if __name__ == '__main__':` guard, as for any multiprocessing code.
  """
  if num_workers <= 1 or len(tasks) <= 1:
    for task in tasks:
      yield fn(*task)
    return
  context = _mp_context()
  with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
    pending = collections.deque()
    for task in tasks:
      pending.append(pool.submit(fn, *task))
      if len(pending) >= 2 * num_workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
