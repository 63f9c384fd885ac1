"""What a training run reports: TensorBoard scalars/images, PNG sample grids, console progress.

Only process 0 writes (TensorBoard event files under `<workdir>/tensorboard`, PNGs
under `<workdir>/samples`); on other processes every writer call is a no-op, so
the loop calls them unconditionally. TensorBoard goes through tensorboardX (no
TensorFlow needed).
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from fsjax.data import image_io


def is_chief() -> bool:
  """True on process 0 (the one that writes logs and images)."""
  return jax.process_index() == 0


class MetricWriter:
  """TensorBoard writer (tensorboardX) that is silent on processes other than 0."""

  def __init__(self, logdir: str, *, enabled: bool | None = None):
    """Opens `logdir` (created) for event files.

    Args:
      logdir: folder for the event files (`<workdir>/tensorboard`).
      enabled: write or not; default: only on process 0.
    """
    self.enabled = is_chief() if enabled is None else enabled
    self._writer = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      os.makedirs(logdir, exist_ok=True)
      self._writer = SummaryWriter(logdir=logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes {name: float-convertible} at `step`."""
    if self._writer is None:
      return
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(value), global_step=int(step))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """Writes {name: uint8 [H, W, 3]} at `step`."""
    if self._writer is None:
      return
    for name, image in images.items():
      self._writer.add_image(name, np.asarray(image), global_step=int(step), dataformats='HWC')

  def write_text(self, step: int, name: str, text: str) -> None:
    """Writes a text summary (e.g. the config)."""
    if self._writer is not None:
      self._writer.add_text(name, text, global_step=int(step))

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Images in [-1, 1] (float) or uint8 -> uint8 [..., H, W, 3] (0-255)."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  images = np.nan_to_num(images.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
  return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(columns: Sequence[np.ndarray], pad: int = 2, pad_value: int = 255) -> np.ndarray:
  """Lays out equally sized image batches as columns: row i = (col0[i] | col1[i] | ...).

  Args:
    columns: batches [B, S, S, 3] (uint8, or float in [-1, 1]), all the same shape;
      e.g. (X_s, X_t, Y, Y_ema).
    pad: white border between cells, in pixels.
    pad_value: border colour.
  Returns:
    uint8 [B * (S + pad) + pad, C * (S + pad) + pad, 3].
  """
  cols = [to_uint8(c) for c in columns]
  b, h, w, ch = cols[0].shape
  for c in cols:
    if c.shape != (b, h, w, ch):
      raise ValueError(f'grid columns differ in shape: {[c.shape for c in cols]}')
  grid = np.full((b * (h + pad) + pad, len(cols) * (w + pad) + pad, ch), pad_value, np.uint8)
  for j, col in enumerate(cols):
    for i in range(b):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      grid[y:y + h, x:x + w] = col[i]
  return grid


def save_sample_grid(workdir: str, step: int, columns: Sequence[np.ndarray],
                     writer: MetricWriter | None = None, name: str = 'samples') -> str | None:
  """Saves `image_grid(columns)` as `<workdir>/samples/<name>_<step:08d>.png` (process 0).

  Also sends it to TensorBoard when `writer` is given. Returns the path (None off
  process 0).
  """
  if not is_chief():
    return None
  grid = image_grid(columns)
  path = os.path.join(workdir, 'samples', f'{name}_{int(step):08d}.png')
  image_io.save_png(path, grid)
  if writer is not None:
    writer.write_images(step, {name: grid})
  return path


def log_parameter_overview(name: str, params: Any) -> str:
  """Logs (process 0) and returns clu's table of parameter shapes, sizes and stats."""
  from clu import parameter_overview  # pylint: disable=g-import-not-at-top
  params = jax.tree.map(np.asarray, jax.device_get(params))
  text = parameter_overview.get_parameter_overview(params, include_stats=True)
  if is_chief():
    logging.info('%s parameters:\n%s', name, text)
  return text


def count_params(params: Any) -> int:
  """Total number of scalars in a pytree."""
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(params)))


def _fmt_duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return '?'
  return str(datetime.timedelta(seconds=int(round(seconds))))


class Progress:
  """Console progress: step, rate, images/s, ETA and the main losses (process 0).

  Rates are measured between consecutive `update` calls (so compile time and
  restarts do not skew the ETA after the second report).
  """

  def __init__(self, num_steps: int, start_step: int, global_batch: int,
               main_keys: Sequence[str] = ('g_loss', 'g_adv', 'g_att', 'g_id', 'g_rec',
                                           'd_loss'),
               printer=None):
    """Args:
      num_steps: last step of the run.
      start_step: step the run (re)started from.
      global_batch: images per step over all devices (for images/s).
      main_keys: metric names shown on the console line, in order, when present.
      printer: callable(str); default logging.info on process 0.
    """
    self.num_steps = int(num_steps)
    self.global_batch = int(global_batch)
    self.main_keys = tuple(main_keys)
    self._printer = printer
    self._last_step = int(start_step)
    self._last_time = time.perf_counter()
    self._start_time = self._last_time
    self.steps_per_sec = float('nan')

  def update(self, step: int, metrics: Mapping[str, float] | None = None) -> dict[str, float]:
    """Prints one progress line at `step`; returns the timing scalars {'steps_per_sec',
    'images_per_sec', 'step_time_ms'} measured since the previous update."""
    now = time.perf_counter()
    steps = int(step) - self._last_step
    elapsed = now - self._last_time
    self._last_step, self._last_time = int(step), now
    timing = {}
    if steps > 0 and elapsed > 0:
      self.steps_per_sec = steps / elapsed
      timing = {'steps_per_sec': self.steps_per_sec,
                'images_per_sec': self.steps_per_sec * self.global_batch,
                'step_time_ms': 1000.0 * elapsed / steps}
    remaining = self.num_steps - int(step)
    eta = remaining / self.steps_per_sec if self.steps_per_sec > 0 else float('nan')
    percent = 100.0 * int(step) / max(self.num_steps, 1)
    parts = [f'step {int(step)}/{self.num_steps} ({percent:.1f}%)']
    if timing:
      parts.append(f'{timing["steps_per_sec"]:.2f} steps/s, {timing["images_per_sec"]:.1f} img/s')
    parts.append(f'ETA {_fmt_duration(eta)}')
    if metrics:
      names = {'g_loss': 'G', 'd_loss': 'D'}
      parts.append(' '.join(f'{names.get(k, k.replace("g_", ""))}={float(metrics[k]):.4g}'
                            for k in self.main_keys if k in metrics))
    line = ' | '.join(parts)
    if self._printer is not None:
      self._printer(line)
    elif is_chief():
      logging.info('%s', line)
    return timing

  def elapsed(self) -> float:
    """Seconds since this Progress was created."""
    return time.perf_counter() - self._start_time


class CountProgress:
  """A carriage-return progress line on stderr for counted work (frames, pairs, images):
  '[LABEL: ]done/total UNIT  rate UNIT/s  ETA h:mm:ss', at most once per `every_s`."""

  def __init__(self, total: int, unit: str = 'frames', enabled: bool = True, stream=None,
               every_s: float = 1.0, label: str = ''):
    self.total = int(total)
    self.unit = unit
    self.enabled = enabled and self.total > 0
    self.stream = stream or sys.stderr
    self.every_s = every_s
    self.label = label
    self.done = 0
    self._start = time.perf_counter()
    self._last = -float('inf')

  def update(self, n: int = 1) -> None:
    self.done += n
    now = time.perf_counter()
    if self.enabled and (now - self._last >= self.every_s or self.done >= self.total):
      self._last = now
      self.stream.write('\r' + self.line() + ' ' * 4)
      self.stream.flush()

  def line(self) -> str:
    elapsed = time.perf_counter() - self._start
    rate = self.done / elapsed if elapsed > 0 else 0.0
    total = max(self.total, self.done)
    eta = (total - self.done) / rate if rate > 0 else float('nan')
    prefix = f'{self.label}: ' if self.label else ''
    return (f'{prefix}{self.done}/{total} {self.unit}  {rate:.2f} {self.unit}/s  '
            f'ETA {_fmt_duration(eta)}')

  def finish(self) -> None:
    if self.enabled:
      self.stream.write('\r' + self.line() + '\n')
      self.stream.flush()
