"""The AEI-Net training loop (`fsjax train`): data, checkpoints, preemption, logs.

`train_and_evaluate(config, workdir)` is the whole run and the Colab API; the step
itself is fsjax/aei/train_lib.py, the shared loop toolkit fsjax/train/. What the loop does:

  * identity encoder: `fsjax.identity.resolve` (config.identity.checkpoint from
    `fsjax convert-arcface` or `fsjax train-arcface`, or trained once into
    WORKDIR/identity for configs with identity.auto_train); refuses to start without
    one unless config.identity.allow_random (smoke tests);
  * data: the TFDS dataset config.dataset.name (fsjax datasets such as
    synthetic_faces/64 are built on first use), host-sharded grain pair iterator;
  * resume: the newest readable checkpoint in `<workdir>/checkpoints` (train state
    and data-iterator position) is restored automatically; a fresh run starts from
    config.init_from's weights when set (fine-tuning, fsjax/aei/init_from.py);
  * every step: the compiled G+D step on all devices of all hosts; no host sync
    except at log, sample and checkpoint steps (checked with jax.transfer_guard);
  * bad input fails before anything is created (`check_run`: config values, dataset,
    identity encoder, workdir), and the workdir is locked for the run (fsjax.train.workdir);
  * SIGTERM (preemption): checkpoint of the current step, then a normal return
    (exit code 0); on multi-host runs the hosts agree on the step through JAX's
    preemption sync point; Ctrl-C (SIGINT, single process): the same checkpoint, then
    KeyboardInterrupt (a second Ctrl-C interrupts at once);
  * non-finite guard: skipped steps are counted in the state; after
    config.max_nonfinite_steps in a row (checked at log/checkpoint steps) the run
    stops with `loop.NonFiniteError` and the last checkpoint untouched;
  * process 0 writes TensorBoard (`<workdir>/tensorboard`), sample grids
    X_s | X_t | Y | Y_ema (`<workdir>/samples/*.png`) and the console progress.
"""

import json
import logging
import os
import time
from typing import Any

import jax
import ml_collections

from fsjax.aei import init_from
from fsjax.aei import train_lib
from fsjax.data import build as build_lib
from fsjax.data import input_pipeline
from fsjax.identity import resolve
from fsjax.train import checkpointing
from fsjax.train import loop
from fsjax.train import metric_logging
from fsjax.train import parallel
from fsjax.train import workdir as workdir_lib

# dataset.alignment -> the identity_crop mode that gives the ArcFace framing.
CROP_MODE_FOR_ALIGNMENT = {'ffhq': 'resize', 'arcface': 'crop_19_237', 'ghost224': 'resize'}
SAMPLE_ROWS = 8
NONFINITE_ADVICE = ('Usual fixes: a lower learning rate, gradient clipping '
                    '(optimizer.grad_clip_norm), float32 compute (model.dtype), or check the '
                    'data for broken images.')


# ----------------------------------------------------------------------------
# Set-up helpers.


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for inconsistent settings (alignment vs crop, sizes, batch)."""
  alignment = config.dataset.alignment
  want = CROP_MODE_FOR_ALIGNMENT.get(alignment)
  if want is None:
    raise ValueError(f'dataset.alignment must be one of {sorted(CROP_MODE_FOR_ALIGNMENT)}, '
                     f'got {alignment!r}')
  if config.identity.crop_mode != want:
    raise ValueError(
        f'identity.crop_mode={config.identity.crop_mode!r} does not match '
        f'dataset.alignment={alignment!r}: faces aligned {alignment!r}-style need '
        f'identity.crop_mode={want!r} to reach the ArcFace framing '
        f'(ffhq <-> resize, arcface <-> crop_19_237, ghost224 <-> resize)')
  step = 2 ** len(config.model.attr_channels)  # one stride-2 conv per attr_channels entry
  if config.image_size < step or config.image_size % step:
    near = max(1, round(config.image_size / step)) * step
    raise ValueError(f'image_size={config.image_size} must be a multiple of {step} '
                     f'(2**len(model.attr_channels)), e.g. --config.image_size={near}')
  if config.per_device_batch_size < 1:
    raise ValueError(f'per_device_batch_size={config.per_device_batch_size} must be >= 1')


# What check_run raises for bad input (a command prints it as one line).
BAD_INPUT = (ValueError, resolve.IdentityCheckpointError, workdir_lib.WorkdirError)


def check_run(config: ml_collections.ConfigDict, workdir: str, *,
              data_source: Any = None) -> str:
  """Checks everything a run needs before it creates anything; returns the absolute workdir.

  Raises:
    ValueError: inconsistent config values (check_config, model.id_dim).
    build_lib.DatasetError: unknown dataset or config, or one that is neither prepared nor
      buildable here (checked only without a `data_source`).
    resolve.IdentityCheckpointError: no identity encoder to load, train or make random.
    workdir_lib.WorkdirError: a workdir that is a file, read-only or on a full disk.
  """
  check_config(config)
  if data_source is None:
    build_lib.check_dataset(config.dataset.name, config.dataset.data_dir or None,
                            config.dataset.manual_dir or None,
                            manual_flag='--config.dataset.manual_dir')
  init_from.check(config)  # resolve.check, or the encoder of config.init_from
  return workdir_lib.check(workdir)


def setup_identity(config: ml_collections.ConfigDict, workdir: str) -> resolve.Resolved:
  """The run's identity encoder (fsjax.identity.resolve), logged."""
  found = resolve.resolve(config, workdir)
  logging.info('identity encoder: %s', json.dumps(found.meta, default=str))
  return found


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
    The errors of check_run (nothing is created then).
    workdir_lib.WorkdirInUse: another run holds the workdir.
    loop.NonFiniteError: config.max_nonfinite_steps consecutive non-finite steps.
    KeyboardInterrupt: Ctrl-C, after saving a checkpoint of the current step.
  """
  workdir = check_run(config, workdir, data_source=data_source)
  with workdir_lib.acquire(workdir, chief=jax.process_index() == 0):
    return _train(config, workdir, data_source)


def _train(config: ml_collections.ConfigDict, workdir: str,
           data_source: Any) -> train_lib.TrainState:
  """train_and_evaluate in a checked, locked workdir."""
  chief = jax.process_index() == 0
  mesh = parallel.make_mesh()
  global_batch = int(config.per_device_batch_size) * mesh.devices.size
  if config.num_devices and int(config.num_devices) != mesh.devices.size:
    logging.warning('config.num_devices=%d but the run has %d devices: the global batch is %d, '
                    'not config.global_batch_size=%s (set --config.num_devices=%d)',
                    config.num_devices, mesh.devices.size, global_batch,
                    config.global_batch_size, mesh.devices.size)
  logging.info('%d processes, %d devices (%d local); global batch %d = %d per device',
               jax.process_count(), jax.device_count(), jax.local_device_count(),
               global_batch, config.per_device_batch_size)

  config = init_from.prepare(config, workdir)  # identity.checkpoint of a fine-tune
  identity = setup_identity(config, workdir)
  models = train_lib.build_models(config, identity.module)
  g_tx, d_tx = train_lib.make_optimizers(config)
  id_vars = parallel.replicate(identity.variables, mesh)

  if data_source is None:
    data_source = loop.training_source(config.dataset)
  data_source = loop.drop_occluded_if_asked(config.dataset, data_source)
  data_iter = input_pipeline.create_pair_iterator(config, data_source, seed=int(config.seed))

  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.keep_checkpoints,
                                    keep_period=config.keep_period)
  state, start_step = loop.restore_or_init(
      ckpt, abstract_state(config, mesh, models, g_tx, d_tx), data_iter,
      lambda: init_from.initialize(config, init_state(config, mesh, models, g_tx, d_tx), mesh,
                                   g_tx, d_tx))

  writer = metric_logging.MetricWriter(os.path.join(workdir, 'tensorboard'))
  if chief and start_step == 0:
    writer.write_text(0, 'config', '```\n' + str(config) + '\n```')
  host_state = loop.to_host({'g': state.g_params, 'd': state.d_params}) if chief else None
  if chief:
    metric_logging.log_parameter_overview('generator (AEI-Net)', host_state['g'])
    metric_logging.log_parameter_overview('discriminator', host_state['d'])
    logging.info('G %.2fM params, D %.2fM params',
                 metric_logging.count_params(host_state['g']) / 1e6,
                 metric_logging.count_params(host_state['d']) / 1e6)
  del host_state

  num_steps = int(config.num_train_steps)
  sample_every = int(config.sample_every_steps)
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
  ckpt_every = int(config.checkpoint_every_steps)
  max_nonfinite = int(config.max_nonfinite_steps)
  progress = metric_logging.Progress(num_steps, start_step, global_batch)
  preemption = loop.PreemptionWatcher()
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
        values = loop.log_interval(step, accumulated, progress, writer)
        accumulated = None
        loop.check_nonfinite(state, max_nonfinite, step, NONFINITE_ADVICE)
        nonfinite_total = int(loop.to_host(state.nonfinite_total))
        writer.write_scalars(step, {'train/nonfinite_total': nonfinite_total})
        if values.get('skipped', 0.0) > 0 and chief:
          logging.warning('step %d: %.0f%% of the last steps were skipped (non-finite losses '
                          'or gradients); %d skipped in total', step,
                          100 * values['skipped'], nonfinite_total)
      if sample_batch is not None and (step % sample_every == 0 or is_last):
        y, y_ema = loop.to_host(sample_fn(state, sample_batch['source'], sample_batch['target'],
                                     id_vars))
        path = metric_logging.save_sample_grid(
            workdir, step, [loop.to_host(sample_batch['source']), loop.to_host(sample_batch['target']),
                            y, y_ema], writer)
        if path:
          logging.info('samples (X_s | X_t | Y | Y_ema): %s', path)
      if (ckpt_every and step % ckpt_every == 0) or is_last:
        loop.check_nonfinite(state, max_nonfinite, step, NONFINITE_ADVICE)
        ckpt.save(step, state, data_iter, config)
      if preemption.checkpoint_if_reached(step, ckpt, state, data_iter, config):
        break
    writer.flush()
  finally:
    loop.close_run(preemption, ckpt, writer, data_iter)
  return state


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
