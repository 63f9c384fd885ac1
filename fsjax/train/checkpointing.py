"""Orbax checkpoints of a training run: train state, data-iterator state and config.

Layout (one Orbax CheckpointManager under `<workdir>/checkpoints`):

  <workdir>/checkpoints/<step>/state/      the train state pytree (any flax.struct
                                           dataclass; StandardSave, sharded arrays)
  <workdir>/checkpoints/<step>/data_iter/  grain iterator state, one JSON per host
                                           (process_<i>-of-<n>.json)
  <workdir>/checkpoints/<step>/config/     the run's config as JSON (process 0)
  <workdir>/checkpoints_unreadable/<step>  checkpoints that failed to restore are
                                           moved here (kept for inspection)

Saving is asynchronous (the arrays are copied off the devices before `save`
returns; files are written in a background thread). `restore_latest` restores
into an abstract target (ShapeDtypeStructs with the shardings wanted now, so a
checkpoint restores onto another device count) and falls back to the previous
step, with a warning, when the latest one is truncated or unreadable.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from fsjax.train import parallel

STATE = 'state'
DATA_ITER = 'data_iter'
CONFIG = 'config'


def abstract_like(tree: Any, shardings: Any = None) -> Any:
  """ShapeDtypeStructs of `tree` carrying `shardings` (a pytree or one sharding).

  The restore target for `Checkpointer.restore_latest`: restored arrays are laid
  out with these shardings, whatever the device count at save time.
  """
  if shardings is None:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        tree)
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings),
                        tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def config_to_dict(config: Any) -> dict[str, Any]:
  """A JSON-able dict of an ml_collections ConfigDict (or a plain dict)."""
  if hasattr(config, 'to_json_best_effort'):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config, default=str))


class Checkpointer:
  """Saves and restores (state, data iterator, config) at training steps.

  Usage:
    ckpt = Checkpointer(workdir, max_to_keep=3, keep_period=50_000)
    restored = ckpt.restore_latest(abstract_state, data_iterator)
    if restored: step, state = restored.step, restored.state
    ...
    ckpt.save(step, state, data_iterator, config)   # asynchronous
    ckpt.close()                                      # waits for pending writes
  """

  def __init__(self, workdir: str, *, max_to_keep: int | None = 3,
               keep_period: int | None = None, async_save: bool = True,
               subdir: str = 'checkpoints'):
    """Opens (creates) `<workdir>/<subdir>`.

    Args:
      workdir: run directory.
      max_to_keep: keep only the newest N checkpoints (None = all).
      keep_period: additionally keep every step divisible by this (None/0 = off).
      async_save: write files in a background thread.
      subdir: checkpoint folder name under workdir.
    """
    self.directory = epath.Path(workdir) / subdir
    self._unreadable_dir = epath.Path(workdir) / f'{subdir}_unreadable'
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep or None,
        keep_period=keep_period or None,
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        create=True)
    self._options = options
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  # --------------------------------------------------------------------------

  def all_steps(self) -> list[int]:
    """Finalised checkpoint steps, ascending."""
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest finalised step, or None."""
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any = None, config: Any = None) -> bool:
    """Starts saving a checkpoint of `step` (returns before the files are written).

    Args:
      step: training step the state is at (steps already applied).
      state: pytree of jax.Arrays (train state); identical structure on every host.
      data_iterator: grain DatasetIterator positioned after the batches of `step`
        (its state is read now), or None.
      config: ConfigDict / dict saved as JSON, or None.
    Returns:
      False when a checkpoint of `step` exists already (nothing saved), else True.
    """
    step = int(step)
    if step in self.manager.all_steps():
      return False
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items[DATA_ITER] = _grain_save_args(data_iterator)
    if config is not None:
      items[CONFIG] = ocp.args.JsonSave(config_to_dict(config))
    return bool(self.manager.save(step, args=ocp.args.Composite(**items), force=True))

  def restore(self, step: int, abstract_state: Any, data_iterator: Any = None) -> Any:
    """Restores `step` into `abstract_state` and positions `data_iterator`; raises on failure.

    A checkpoint without data-iterator state restores the train state only (warning).
    """
    items = {STATE: ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      if (self.directory / str(step) / DATA_ITER).exists():
        items[DATA_ITER] = _grain_restore_args(data_iterator)
      else:
        logging.warning('checkpoint %d has no data-iterator state; the input pipeline '
                        'starts from its beginning', step)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored[STATE]

  def restore_latest(self, abstract_state: Any, data_iterator: Any = None) -> 'Restored | None':
    """Restores the newest readable checkpoint, or returns None when there is none.

    A checkpoint that fails to restore (truncated or missing files, bad metadata) is
    skipped with a warning and the previous one is tried. Once an older checkpoint
    restores, the unreadable newer ones are moved to `<workdir>/checkpoints_unreadable/`
    (so new saves of those steps can happen). If none restores (for example the
    config no longer matches the saved state), nothing is moved and the error of
    the newest one is raised.

    Args:
      abstract_state: ShapeDtypeStruct pytree with the target shardings
        (`abstract_like(state, shardings)`), same structure as the saved state.
      data_iterator: freshly created grain iterator to position, or None.
    Returns:
      Restored(step, state) or None when the folder holds no checkpoint.
    Raises:
      RuntimeError: checkpoints exist but none of them restores.
    """
    failed = []
    for step in reversed(self.all_steps()):
      try:
        state = self.restore(step, abstract_state, data_iterator)
      except Exception as e:  # pylint: disable=broad-except
        message = f'{type(e).__name__}: {str(e).splitlines()[0][:400] if str(e) else ""}'
        logging.warning('checkpoint of step %d in %s is unreadable (%s); trying the previous '
                        'one', step, self.directory, message)
        failed.append((step, e))
        continue
      for bad_step, _ in failed:
        logging.warning('moving unreadable checkpoint %d to %s', bad_step, self._unreadable_dir)
        self._set_aside(bad_step)
      logging.info('restored checkpoint of step %d from %s', step, self.directory)
      return Restored(step, state)
    if failed:
      step, error = failed[0]
      raise RuntimeError(
          f'none of the checkpoints {sorted(s for s, _ in failed)} in {self.directory} '
          f'restores; the newest (step {step}) fails with: {type(error).__name__}: '
          f'{str(error)[:1000]}. If the config changed (model sizes), use a new workdir.'
      ) from error
    return None

  def restore_config(self, step: int | None = None) -> dict[str, Any] | None:
    """The config JSON saved with `step` (default latest), or None."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    path = self.directory / str(step) / CONFIG
    if not path.exists():
      return None
    restored = self.manager.restore(step, args=ocp.args.Composite(
        **{CONFIG: ocp.args.JsonRestore()}))
    return dict(restored[CONFIG])

  def _set_aside(self, step: int) -> None:
    """Moves an unreadable step out of the managed folder (process 0), then re-reads it."""
    self.manager.wait_until_finished()
    if jax.process_index() == 0:
      src = self.directory / str(step)
      dst = self._unreadable_dir / str(step)
      if dst.exists():
        shutil.rmtree(os.fspath(dst))
      dst.parent.mkdir(parents=True, exist_ok=True)
      shutil.move(os.fspath(src), os.fspath(dst))
    parallel.barrier(f'fsjax_checkpoint_set_aside_{step}')
    self.manager.reload()

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()


@contextlib.contextmanager
def quiet_failed_reads():
  """Silences what a failing Orbax read logs (hundreds of asyncio 'Task exception was never
  retrieved' tracebacks, metadata errors): the caller reports the failure once."""
  loggers = [logging.getLogger(name) for name in ('asyncio', 'absl')]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    gc.collect()  # failed tasks log when they are collected: collect them while silenced
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


def finished_steps(workdir: str, subdir: str = 'checkpoints') -> list[int]:
  """Finalised checkpoint steps of a run, ascending; read-only (creates and deletes nothing)."""
  directory = epath.Path(os.path.abspath(workdir)) / subdir
  if not directory.is_dir():
    return []
  with quiet_failed_reads():  # (Orbax also warns that read_only changes save_interval_steps)
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    with ocp.CheckpointManager(directory, options=options) as manager:
      return sorted(manager.all_steps())


def restore_items(workdir: str, step: int, keys: tuple[str, ...],
                  subdir: str = 'checkpoints') -> tuple[dict[str, Any], dict[str, Any]]:
  """Read-only restore of some top-level fields of a saved train state, as numpy.

  For inference exports: no train state is built, nothing on disk changes.

  Args:
    workdir: run directory.
    step: a finalised step (`finished_steps`).
    keys: state fields to read (e.g. ('ema_params', 'g_batch_stats')); fields the
      checkpoint lacks are left out of the result.
  Returns:
    (the config saved with the step, {key: numpy pytree}).
  """
  step_dir = epath.Path(os.path.abspath(workdir)) / subdir / str(int(step))
  with quiet_failed_reads():
    return _restore_items(step_dir, keys)


def _restore_items(step_dir: epath.Path, keys: tuple[str, ...]):
  config = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step_dir / CONFIG)
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    stored = checkpointer.metadata(step_dir / STATE).item_metadata.tree
    wanted = {k: stored[k] for k in keys if k in stored}
    if not wanted:  # Orbax refuses a partial restore of an empty target
      return dict(config), {}
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), wanted)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    restored = checkpointer.restore(step_dir / STATE, args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True))
  finally:
    checkpointer.close()
  return dict(config), dict(restored)


class Restored:
  """A restored checkpoint: `step` (int) and `state` (the pytree)."""

  def __init__(self, step: int, state: Any):
    self.step = int(step)
    self.state = state

  def __iter__(self):
    return iter((self.step, self.state))


def _grain_save_args(iterator):
  import grain  # pylint: disable=g-import-not-at-top
  return grain.checkpoint.CheckpointSave(iterator)


def _grain_restore_args(iterator):
  import grain  # pylint: disable=g-import-not-at-top
  return grain.checkpoint.CheckpointRestore(iterator)
