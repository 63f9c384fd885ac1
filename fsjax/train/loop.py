"""The loop toolkit every trainer shares: host transfer, SIGTERM / Ctrl-C, the non-finite
guard, restore-or-initialise and closing a run.

The AEI-Net and ArcFace loops (fsjax/aei/trainer.py, fsjax/identity/trainer.py) keep their
own step functions and call these; neither imports the other.
"""

import logging
import signal
import sys
import threading
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from fsjax.train import checkpointing
from fsjax.train import metric_logging
from fsjax.train import parallel


class NonFiniteError(RuntimeError):
  """Raised when too many consecutive steps had non-finite losses or gradients."""


def to_host(tree: Any) -> Any:
  """Replicated (or fully addressable) jax.Arrays -> numpy, without cross-host traffic."""

  def get(x):
    if isinstance(x, jax.Array):
      if x.is_fully_addressable:
        return np.asarray(x)
      return np.asarray(x.addressable_data(0))
    return x

  return jax.tree.map(get, tree)


def metrics_to_host(metrics: Any) -> dict[str, float]:
  """{name: float} of a replicated clu metrics Collection; NaN for an average whose steps
  were all skipped (0 / 0)."""
  host = to_host(metrics)
  with np.errstate(invalid='ignore', divide='ignore'):
    return {k: float(v) for k, v in host.compute().items()}


def log_interval(step: int, accumulated: Any, progress: metric_logging.Progress,
                 writer: metric_logging.MetricWriter) -> dict[str, float]:
  """The end of a log interval: the averaged metrics to the host, one console line, and
  'train/*' and 'perf/*' scalars to TensorBoard. Returns the metrics {name: float}."""
  values = metrics_to_host(accumulated)
  timing = progress.update(step, values)
  writer.write_scalars(step, {f'train/{k}': v for k, v in values.items()})
  writer.write_scalars(step, {f'perf/{k}': v for k, v in timing.items()})
  return values


def check_nonfinite(state: Any, max_nonfinite: int, step: int, advice: str) -> None:
  """Raises NonFiniteError once `state.nonfinite_count` consecutive steps were skipped.

  Args:
    state: a train state with an int32 [] `nonfinite_count` (replicated).
    max_nonfinite: the limit (config.max_nonfinite_steps); <= 0 turns the check off.
    step: the current step (for the message).
    advice: what to change, appended to the message.
  """
  if max_nonfinite <= 0:
    return
  count = int(to_host(state.nonfinite_count))
  if count >= max_nonfinite:
    raise NonFiniteError(
        f'step {step}: the last {count} steps had non-finite losses or gradients and were '
        f'skipped (limit config.max_nonfinite_steps={max_nonfinite}); stopping. The newest '
        f'checkpoint holds the last good parameters. {advice}')


def training_source(dataset_cfg: ml_collections.ConfigDict) -> Any:
  """The split dataset_cfg.split of dataset_cfg.name; fsjax's own datasets (synthetic_faces)
  are built first by process 0 when missing, the other hosts wait for it."""
  # pylint: disable=g-import-not-at-top
  from fsjax.data import build as build_lib
  from fsjax.data import input_pipeline
  if jax.process_index() == 0:
    build_lib.ensure_dataset(dataset_cfg.name, dataset_cfg.data_dir or None,
                             dataset_cfg.manual_dir or None)
  parallel.barrier('fsjax_dataset_ready')
  return input_pipeline.create_data_source(dataset_cfg, dataset_cfg.split)


def drop_occluded_if_asked(dataset_cfg: ml_collections.ConfigDict, source: Any) -> Any:
  """`source` without the records whose synthetic_faces attributes draw an occluder when
  dataset_cfg.drop_occluded, else `source` itself."""
  if not dataset_cfg.drop_occluded:
    return source
  from fsjax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  kept = input_pipeline.unoccluded_subset(source)
  logging.info('dataset.drop_occluded: %d of %d records have no occluder', len(kept),
               len(source))
  return kept


def restore_or_init(ckpt: checkpointing.Checkpointer, abstract_state: Any, data_iter: Any,
                    init: Callable[[], Any]) -> tuple[Any, int]:
  """(state, start step): the newest readable checkpoint (train state and data-iterator
  position restored in place), else `init()` at step 0."""
  restored = ckpt.restore_latest(abstract_state, data_iter)
  if restored is not None:
    logging.info('resuming from step %d', restored.step)
    return restored.state, restored.step
  return init(), 0


class PreemptionWatcher:
  """Tells the loop when to save and stop after SIGTERM or Ctrl-C (SIGINT).

  Single process: Python handlers set a flag; the loop saves the current step, then stops
  (SIGTERM: a normal return; Ctrl-C: KeyboardInterrupt after the checkpoint, so a command
  exits 130). A second Ctrl-C raises KeyboardInterrupt at once, without the checkpoint.
  Multi-process: SIGTERM through JAX's preemption sync point (the coordination service sees
  the signal on any host and picks one step for all of them); Ctrl-C interrupts as usual.
  """

  def __init__(self):
    self.requested = False
    self.signal = None  # 'SIGTERM' | 'SIGINT': the first signal seen
    self._previous = {}
    self._multi = jax.process_count() > 1
    if not self._multi and threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._on_signal)

  def _on_signal(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested:
      signal.signal(signal.SIGINT, self._previous[signal.SIGINT])  # a third one: the default
      raise KeyboardInterrupt('second Ctrl-C: stopped at once, without a checkpoint')
    self.requested = True
    self.signal = self.signal or signal.Signals(signum).name
    if signum == signal.SIGINT:
      print('Ctrl-C: saving a checkpoint after this step, then stopping (press Ctrl-C again '
            'to stop at once, without it)', file=sys.stderr, flush=True)

  def reached(self, step: int) -> bool:
    if self._multi:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        return bool(multihost_utils.reached_preemption_sync_point(int(step)))
      except RuntimeError:
        return False
    return self.requested

  def close(self):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def checkpoint_if_reached(self, step: int, ckpt: checkpointing.Checkpointer, state: Any,
                            data_iter: Any, config: ml_collections.ConfigDict) -> bool:
    """After SIGTERM: saves a checkpoint of `step`, waits for it and returns True (stop).

    Raises:
      KeyboardInterrupt: after Ctrl-C, once the checkpoint is on disk.
    """
    if not self.reached(step):
      return False
    name = self.signal or 'SIGTERM'
    logging.warning('%s: saving a checkpoint of step %d and stopping', name, step)
    ckpt.save(step, state, data_iter, config)
    ckpt.wait()
    if name == 'SIGINT':
      raise KeyboardInterrupt(f'Ctrl-C: saved a checkpoint of step {step}')
    return True


def close_run(preemption: PreemptionWatcher, ckpt: checkpointing.Checkpointer,
              writer: metric_logging.MetricWriter, data_iter: Any) -> None:
  """Releases what a training loop opened: signal handlers, checkpointer, writer, data."""
  preemption.close()
  ckpt.close()
  writer.close()
  if hasattr(data_iter, 'close'):
    data_iter.close()
