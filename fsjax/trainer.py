"""The AEI-Net training loop (`fsjax train`): data, checkpoints, preemption, logs.

`train_and_evaluate(config, workdir)` is the whole run and the Colab API; the step
itself is fsjax/train_lib.py. What the loop does:

  * identity encoder: config.identity.checkpoint (`fsjax convert-arcface` or
    `fsjax train-arcface`), or `ensure_identity_checkpoint` for configs that train
    their own (synthetic); refuses to start without one unless
    config.identity.allow_random (smoke tests);
  * data: the TFDS dataset config.dataset.name (fsjax datasets such as
    synthetic_faces/64 are built on first use), host-sharded grain pair iterator;
  * resume: the newest readable checkpoint in `<workdir>/checkpoints` (train state
    and data-iterator position) is restored automatically;
  * every step: the compiled G+D step on all devices of all hosts; no host sync
    except at log, sample and checkpoint steps (checked with jax.transfer_guard);
  * SIGTERM (preemption): checkpoint of the current step, then a normal return
    (exit code 0); on multi-host runs the hosts agree on the step through JAX's
    preemption sync point;
  * non-finite guard: skipped steps are counted in the state; after
    config.max_nonfinite_steps in a row (checked at log/checkpoint steps) the run
    stops with `NonFiniteError` and the last checkpoint untouched;
  * process 0 writes TensorBoard (`<workdir>/tensorboard`), sample grids
    X_s | X_t | Y | Y_ema (`<workdir>/samples/*.png`) and the console progress.
"""

import json
import logging
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fsjax import checkpointing
from fsjax import input_pipeline
from fsjax import metric_logging
from fsjax import parallel
from fsjax import train_lib

# dataset.alignment -> the identity_crop mode that gives the ArcFace framing.
CROP_MODE_FOR_ALIGNMENT = {'ffhq': 'resize', 'arcface': 'crop_19_237'}
SAMPLE_ROWS = 8


class NonFiniteError(RuntimeError):
  """Raised when too many consecutive steps had non-finite losses or gradients."""


class IdentityCheckpointError(RuntimeError):
  """No usable identity-encoder checkpoint (the message says how to get one)."""


# ----------------------------------------------------------------------------
# Set-up helpers.


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for inconsistent settings (alignment vs crop, sizes, batch)."""
  alignment = config.dataset.get('alignment', 'ffhq')
  want = CROP_MODE_FOR_ALIGNMENT.get(alignment)
  if want is None:
    raise ValueError(f'dataset.alignment must be one of {sorted(CROP_MODE_FOR_ALIGNMENT)}, '
                     f'got {alignment!r}')
  if config.identity.crop_mode != want:
    raise ValueError(
        f'identity.crop_mode={config.identity.crop_mode!r} does not match '
        f'dataset.alignment={alignment!r}: faces aligned {alignment!r}-style need '
        f'identity.crop_mode={want!r} to reach the ArcFace framing '
        f'(ffhq <-> resize, arcface <-> crop_19_237)')
  levels = len(config.model.attr_channels)
  if config.image_size % (2 ** levels):
    raise ValueError(f'image_size {config.image_size} is not divisible by 2**{levels} '
                     '(len(model.attr_channels))')
  if config.per_device_batch_size < 1:
    raise ValueError('per_device_batch_size must be >= 1')


def identity_instructions(config: ml_collections.ConfigDict) -> str:
  """How to get an identity checkpoint (the text of IdentityCheckpointError)."""
  return (
      'AEI-Net training needs a frozen ArcFace identity encoder: set '
      '--config.identity.checkpoint=DIR to a directory made by\n'
      '  fsjax convert-arcface backbone.pth DIR          (arcface_torch r18/34/50/100 '
      'weights, or an InsightFace ONNX recognizer such as w600k_r50.onnx), or\n'
      '  fsjax train-arcface --config configs/arcface_synthetic.py --workdir W   '
      '(trains one here; then DIR is what it reports)\n'
      'For a smoke test only, --config.identity.allow_random=True uses a random encoder '
      f'(arch {config.identity.get("arch", "?")!r}); it cannot learn identity swapping.')


def ensure_identity_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Returns the identity checkpoint directory the run uses, making it when the config says so.

  config.identity.checkpoint wins when set (it must contain identity.json). Otherwise,
  when config.identity.auto_train names an ArcFace config (configs/synthetic.py sets
  'configs/arcface_synthetic.py'), the encoder is trained once into
  `<workdir>/identity` and reused by later runs and restarts.

  Raises:
    IdentityCheckpointError: nothing to load and nothing to train.
  """
  path = config.identity.get('checkpoint', '')
  if path:
    path = os.path.expanduser(path)
    if not os.path.isfile(os.path.join(path, 'identity.json')):
      raise IdentityCheckpointError(
          f'identity.checkpoint={path!r} is not an identity checkpoint (no identity.json).\n'
          + identity_instructions(config))
    return path
  auto = config.identity.get('auto_train', '')
  if auto:
    out = os.path.join(workdir, 'identity')
    if os.path.isfile(os.path.join(out, 'identity.json')):
      return out
    return _train_identity(auto, out, config)
  raise IdentityCheckpointError(identity_instructions(config))


def _train_identity(arcface_config: str, out: str, config: ml_collections.ConfigDict) -> str:
  """Trains the identity encoder of `arcface_config` into `out` (hook for the ArcFace trainer)."""
  try:
    from fsjax import arcface_trainer  # pylint: disable=g-import-not-at-top
  except ImportError:
    arcface_trainer = None
  train_fn = getattr(arcface_trainer, 'train_identity_checkpoint', None)
  if train_fn is None:
    raise IdentityCheckpointError(
        f'config.identity.auto_train={arcface_config!r} asks for the synthetic-identity '
        'ArcFace, but this fsjax has no in-process ArcFace trainer hook '
        '(fsjax.arcface_trainer.train_identity_checkpoint). Train it yourself and pass it:\n'
        f'  fsjax train-arcface --config {arcface_config} --workdir {out}_run\n'
        '  then --config.identity.checkpoint=<the identity directory it writes>\n'
        + identity_instructions(config))
  logging.info('training the identity encoder of %s into %s (once; reused afterwards)',
               arcface_config, out)
  return train_fn(arcface_config, out)


def setup_identity(config: ml_collections.ConfigDict, workdir: str):
  """(identity module, variables {'params', 'batch_stats'} as numpy/jax, meta dict)."""
  from fsjax import models as models_lib  # pylint: disable=g-import-not-at-top
  if config.identity.get('allow_random', False) and not config.identity.get('checkpoint', ''):
    module = models_lib.build_identity(config)
    x = jnp.zeros((1, 112, 112, 3), jnp.float32)
    variables = jax.jit(module.init)(jax.random.PRNGKey(int(config.seed) + 7), x)
    logging.warning('identity.allow_random=True: RANDOM identity encoder (arch %r); the '
                    'swap cannot learn identities (smoke test only)', config.identity.arch)
    meta = {'arch': config.identity.arch, 'random': True}
  else:
    from fsjax import identity as identity_lib  # pylint: disable=g-import-not-at-top
    path = ensure_identity_checkpoint(config, workdir)
    module, variables, meta = identity_lib.load_identity(path, dtype=config.model.dtype)
    meta = dict(meta, path=path)
    logging.info('identity encoder: %s', json.dumps(meta))
  emb = module.embedding_dim if hasattr(module, 'embedding_dim') else None
  if emb is not None and emb != config.model.id_dim:
    raise ValueError(f'model.id_dim={config.model.id_dim} but the identity encoder gives '
                     f'{emb}-d embeddings; set --config.model.id_dim={emb}')
  return module, variables, meta


def get_data_source(config: ml_collections.ConfigDict):
  """The training split of config.dataset (fsjax datasets are built first when missing)."""
  from fsjax.data import build as build_lib  # pylint: disable=g-import-not-at-top
  ds = config.dataset
  if jax.process_index() == 0:
    build_lib.ensure_dataset(ds.name, ds.get('data_dir', '') or None,
                             ds.get('manual_dir', '') or None)
  parallel.barrier('fsjax_dataset_ready')
  return input_pipeline.create_data_source(ds, ds.get('split', 'train'))


def to_host(tree: Any) -> Any:
  """Replicated (or fully addressable) jax.Arrays -> numpy, without cross-host traffic."""

  def get(x):
    if isinstance(x, jax.Array):
      if x.is_fully_addressable:
        return np.asarray(x)
      return np.asarray(x.addressable_data(0))
    return x

  return jax.tree.map(get, tree)


class PreemptionWatcher:
  """Tells the loop when to save and stop after SIGTERM.

  Single process: a Python SIGTERM handler sets a flag. Multi-process: JAX's
  preemption sync point (the coordination service sees the signal on any host and
  picks one step for all of them).
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    self._multi = jax.process_count() > 1
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    if self._multi:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        return bool(multihost_utils.reached_preemption_sync_point(int(step)))
      except RuntimeError:
        return False
    return self.requested

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def checkpoint_if_reached(self, step: int, ckpt: checkpointing.Checkpointer, state: Any,
                            data_iter: Any, config: ml_collections.ConfigDict) -> bool:
    """After SIGTERM: saves a checkpoint of `step`, waits for it and returns True (stop)."""
    if not self.reached(step):
      return False
    logging.warning('SIGTERM: saving a checkpoint of step %d and stopping', step)
    ckpt.save(step, state, data_iter, config)
    ckpt.wait()
    return True


def close_run(preemption: PreemptionWatcher, ckpt: checkpointing.Checkpointer,
              writer: metric_logging.MetricWriter, data_iter: Any) -> None:
  """Releases what a training loop opened: SIGTERM handler, checkpointer, writer, data."""
  preemption.close()
  ckpt.close()
  writer.close()
  if hasattr(data_iter, 'close'):
    data_iter.close()


def init_state(config: ml_collections.ConfigDict, mesh, models: train_lib.Models, g_tx, d_tx):
  """Fresh TrainState, replicated on `mesh` (computed by every host from config.seed)."""
  rep = parallel.replicated_sharding(mesh)
  init = jax.jit(lambda key: train_lib.create_train_state(config, key, models, g_tx, d_tx),
                 out_shardings=rep)
  return init(jax.random.PRNGKey(int(config.seed)))


def abstract_state(config: ml_collections.ConfigDict, mesh, models: train_lib.Models, g_tx, d_tx):
  """ShapeDtypeStructs of the TrainState with replicated shardings (restore target)."""
  shapes = jax.eval_shape(lambda key: train_lib.create_train_state(config, key, models, g_tx,
                                                                   d_tx),
                          jax.random.PRNGKey(0))
  return checkpointing.abstract_like(shapes, parallel.replicated_sharding(mesh))


# ----------------------------------------------------------------------------
# The loop.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data_source: Any = None) -> train_lib.TrainState:
  """Trains AEI-Net to config.num_train_steps, resuming from `workdir` when it has checkpoints.

  Args:
    config: the training config (configs/*.py).
    workdir: run directory: checkpoints/, tensorboard/, samples/, identity/ (auto).
    data_source: records {'image', 'label'} to train on instead of config.dataset
      (tests, Colab); default: the TFDS dataset, built first if it is an fsjax one.
  Returns:
    The final TrainState (replicated jax.Arrays).
  Raises:
    IdentityCheckpointError: no identity encoder (message says how to get one).
    NonFiniteError: config.max_nonfinite_steps consecutive non-finite steps.
  """
  check_config(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  chief = jax.process_index() == 0
  mesh = parallel.make_mesh()
  global_batch = int(config.per_device_batch_size) * mesh.devices.size
  if config.get('num_devices') and int(config.num_devices) != mesh.devices.size:
    logging.warning('config.num_devices=%d but the run has %d devices: the global batch is %d, '
                    'not config.global_batch_size=%s (set --config.num_devices=%d)',
                    config.num_devices, mesh.devices.size, global_batch,
                    config.get('global_batch_size'), mesh.devices.size)
  logging.info('%d processes, %d devices (%d local); global batch %d = %d per device',
               jax.process_count(), jax.device_count(), jax.local_device_count(),
               global_batch, config.per_device_batch_size)

  identity_module, id_vars, _ = setup_identity(config, workdir)
  models = train_lib.build_models(config, identity_module)
  g_tx, d_tx = train_lib.make_optimizers(config)
  id_vars = parallel.replicate(id_vars, mesh)

  if data_source is None:
    data_source = get_data_source(config)
  data_iter = input_pipeline.create_pair_iterator(config, data_source, seed=int(config.seed))

  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.get('keep_checkpoints', 3),
                                    keep_period=config.get('keep_period', None))
  restored = ckpt.restore_latest(abstract_state(config, mesh, models, g_tx, d_tx), data_iter)
  if restored is not None:
    state, start_step = restored.state, restored.step
    logging.info('resuming from step %d', start_step)
  else:
    state, start_step = init_state(config, mesh, models, g_tx, d_tx), 0

  writer = metric_logging.MetricWriter(os.path.join(workdir, 'tensorboard'))
  if chief and start_step == 0:
    writer.write_text(0, 'config', '```\n' + str(config) + '\n```')
  host_state = to_host({'g': state.g_params, 'd': state.d_params}) if chief else None
  if chief:
    metric_logging.log_parameter_overview('generator (AEI-Net)', host_state['g'])
    metric_logging.log_parameter_overview('discriminator', host_state['d'])
    logging.info('G %.2fM params, D %.2fM params',
                 metric_logging.count_params(host_state['g']) / 1e6,
                 metric_logging.count_params(host_state['d']) / 1e6)
  del host_state

  num_steps = int(config.num_train_steps)
  sample_every = int(config.get('sample_every_steps', 0) or 0)
  # Compile ahead of the loop on every host, then meet: hosts can be minutes apart here
  # (one compiling, another loading from a compilation cache), which the first
  # collective of the step would not tolerate on CPU (gloo rendezvous: 30 s).
  next_batch = parallel.shard_batch(next(data_iter), mesh) if start_step < num_steps else None
  t0 = time.perf_counter()
  train_step = train_lib.make_train_step(config, mesh, models, g_tx, d_tx)
  if next_batch is not None:
    train_step = train_step.lower(state, next_batch, id_vars).compile()
  sample_batch = _sample_batch(config, data_source, mesh) if sample_every else None
  sample_fn = train_lib.make_sample_fn(models)
  if sample_batch is not None:
    sample_fn = sample_fn.lower(state, sample_batch['source'], sample_batch['target'],
                                id_vars).compile()
  merge = jax.jit(lambda a, b: a.merge(b), donate_argnums=0)
  parallel.barrier('fsjax_train_compiled')
  compile_seconds = time.perf_counter() - t0
  logging.info('compiled the train step in %.1f s', compile_seconds)
  writer.write_scalars(start_step, {'perf/compile_s': compile_seconds})

  log_every = max(int(config.log_every_steps), 1)
  ckpt_every = int(config.get('checkpoint_every_steps', 0) or 0)
  max_nonfinite = int(config.get('max_nonfinite_steps', 20) or 0)
  progress = metric_logging.Progress(num_steps, start_step, global_batch)
  preemption = PreemptionWatcher()
  accumulated = None
  step = start_step
  try:
    while step < num_steps:
      step += 1
      batch = next_batch if next_batch is not None else parallel.shard_batch(next(data_iter),
                                                                             mesh)
      next_batch = None
      with jax.transfer_guard('disallow'):
        state, step_metrics = train_step(state, batch, id_vars)
        accumulated = step_metrics if accumulated is None else merge(accumulated, step_metrics)

      is_last = step == num_steps
      if step % log_every == 0 or is_last:
        values = train_lib.metrics_to_host(accumulated)
        accumulated = None
        timing = progress.update(step, values)
        _check_nonfinite(state, max_nonfinite, step)
        nonfinite_total = int(to_host(state.nonfinite_total))
        writer.write_scalars(step, {f'train/{k}': v for k, v in values.items()})
        writer.write_scalars(step, {f'perf/{k}': v for k, v in timing.items()})
        writer.write_scalars(step, {'train/nonfinite_total': nonfinite_total})
        if values.get('skipped', 0.0) > 0 and chief:
          logging.warning('step %d: %.0f%% of the last steps were skipped (non-finite losses '
                          'or gradients); %d skipped in total', step,
                          100 * values['skipped'], nonfinite_total)
      if sample_batch is not None and (step % sample_every == 0 or is_last):
        y, y_ema = to_host(sample_fn(state, sample_batch['source'], sample_batch['target'],
                                     id_vars))
        path = metric_logging.save_sample_grid(
            workdir, step, [to_host(sample_batch['source']), to_host(sample_batch['target']),
                            y, y_ema], writer)
        if path:
          logging.info('samples (X_s | X_t | Y | Y_ema): %s', path)
      if (ckpt_every and step % ckpt_every == 0) or is_last:
        _check_nonfinite(state, max_nonfinite, step)
        ckpt.save(step, state, data_iter, config)
      if preemption.checkpoint_if_reached(step, ckpt, state, data_iter, config):
        break
    writer.flush()
  finally:
    close_run(preemption, ckpt, writer, data_iter)
  return state


def _check_nonfinite(state, max_nonfinite: int, step: int) -> None:
  if max_nonfinite <= 0:
    return
  count = int(to_host(state.nonfinite_count))
  if count >= max_nonfinite:
    raise NonFiniteError(
        f'step {step}: the last {count} steps had non-finite losses or gradients and were '
        f'skipped (limit config.max_nonfinite_steps={max_nonfinite}); stopping. The newest '
        'checkpoint holds the last good parameters. Usual fixes: a lower learning rate, '
        'gradient clipping (optimizer.grad_clip_norm), float32 compute (model.dtype), or '
        'check the data for broken images.')


def _sample_batch(config: ml_collections.ConfigDict, data_source: Any, mesh) -> dict[str, Any]:
  """A fixed batch of SAMPLE_ROWS pairs (identical on every host), replicated on `mesh`."""
  it = input_pipeline.create_pair_iterator(
      config, data_source, seed=int(config.seed) + 1, process_index=0, process_count=1,
      batch_size=min(SAMPLE_ROWS, len(data_source)), num_workers=0)
  try:
    batch = next(it)
  finally:
    if hasattr(it, 'close'):
      it.close()
  return parallel.replicate({'source': batch['source'], 'target': batch['target']}, mesh)
