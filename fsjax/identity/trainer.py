"""The ArcFace training loop (`fsjax train-arcface`): data, checkpoints, eval, identity export.

`train_and_evaluate(config, workdir)` is the whole run (and the Colab API); the math is
fsjax/identity/train_lib.py. It uses the loop toolkit every trainer shares, fsjax/train/:
parallel (mesh, data-parallel step), checkpointing (Orbax: state + grain iterator position +
config, exact resume), metric_logging (TensorBoard, console progress/ETA) and loop (dataset
build on first use, SIGTERM handling, host transfer, the non-finite guard).

A run writes into WORKDIR:
  checkpoints/<step>/   train state (class matrix sharded when large), data iterator, config
  tensorboard/          train/* scalars, eval/* verification figures
  eval.json             the last verification result (unseen identities)
  identity/             the exported encoder (identity.json + Orbax variables), loadable with
                        fsjax.load_identity_encoder / usable as config.identity.checkpoint

Verification: the images of config.eval.split (synthetic_faces: 'test' = held-out
identities, never seen in training) are embedded (inference-mode BatchNorm, image +
mirror), and deterministic pairs (`verification.make_pairs`: all or
config.eval.num_pairs same-identity pairs and as many different-identity pairs) are
scored by cosine: 10-fold accuracy (threshold from the other 9 folds), best-threshold
accuracy and TAR at FAR = config.eval.far.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from fsjax.data import build as build_lib
from fsjax.data import input_pipeline
from fsjax.identity import checkpoint as identity_lib
from fsjax.identity import train_lib as lib
from fsjax.identity import verification
from fsjax.train import checkpointing
from fsjax.train import config_files
from fsjax.train import loop
from fsjax.train import metric_logging
from fsjax.train import parallel
from fsjax.train import workdir as workdir_lib

NONFINITE_ADVICE = ('Lower optimizer.learning_rate, raise optimizer.warmup_steps or use '
                    'loss.margin_warmup_steps.')


def _data_sources(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
  """(train source, eval source) of config.dataset; fsjax datasets are built when missing."""
  train = loop.training_source(config.dataset)  # builds synthetic_faces on first use
  eval_split = config.eval.split
  test = input_pipeline.create_data_source(config.dataset, eval_split) if eval_split else None
  return train, test


def num_classes_of(config: ml_collections.ConfigDict, labels: np.ndarray) -> int:
  """config.fc.num_classes, or max(label) + 1 when it is 0 (checked against the labels)."""
  n = int(config.fc.num_classes)
  top = int(labels.max()) + 1 if len(labels) else 0
  if n == 0:
    return top
  if top > n:
    raise ValueError(f'labels go up to {top - 1} but fc.num_classes={n}')
  return n


def evaluate(config: ml_collections.ConfigDict, variables: Any, source: Any,
             labels: np.ndarray | None = None, embed_fn=None) -> dict[str, float]:
  """Verification metrics of `variables` ({'params','batch_stats'}) on a labelled source.

  Args:
    config: config.eval (num_pairs, folds, far, flip, batch_size, max_images, seed).
    variables: IResNet variables (host or device arrays).
    source: random-access records {'image' uint8 [112, 112, 3], 'label'}.
    labels: int [N] labels of `source` (default: read).
    embed_fn: `lib.make_embed_fn(config)` (compiled once by the caller), default new.
  Returns:
    `lib.verification_metrics` dict.
  """
  ev = config.eval
  labels = input_pipeline.read_labels(source) if labels is None else np.asarray(labels)
  n = len(labels)
  max_images = int(ev.max_images)
  if max_images and n > max_images:
    keep = np.sort(np.random.default_rng(int(ev.seed)).choice(n, max_images,
                                                                       replace=False))
  else:
    keep = np.arange(n)
  embed_fn = embed_fn or lib.make_embed_fn(config, flip=bool(ev.flip))
  batch_size = int(ev.batch_size)
  variables = jax.device_get(variables)
  chunks = []
  for start in range(0, len(keep), batch_size):
    idx = keep[start:start + batch_size]
    images = np.stack([np.asarray(source[int(i)]['image']) for i in idx])
    pad = batch_size - len(idx)  # fixed shape: one compilation
    if pad:
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    chunks.append(np.asarray(embed_fn(variables, images))[:len(idx)])
  embeddings = np.concatenate(chunks)
  pairs, same = verification.make_pairs(labels[keep], int(ev.num_pairs),
                               seed=int(ev.seed))
  return verification.verification_metrics(embeddings, pairs, same, folds=int(ev.folds),
                                  far=float(ev.far))


def identity_meta(config: ml_collections.ConfigDict, setup: lib.Setup, **extra) -> dict:
  """identity.json of the trained backbone (alignment = config.dataset.alignment)."""
  m = setup.backbone
  return identity_lib.make_meta(m.layers, m.width, m.embedding_dim, m.bn_eps,
                                stem_stride=m.stem_stride,
                                alignment=config.dataset.alignment,
                                source='fsjax train-arcface',
                                training_data=config.dataset.name, **extra)


def export_identity(directory: str, variables: Any, meta: dict) -> str:
  """Writes the identity checkpoint dir (fsjax.identity.checkpoint.save_identity, replaced if present)."""
  return identity_lib.save_identity(directory, jax.device_get(variables), meta, overwrite=True)


SYNTHETIC_PREFIX = 'synthetic_faces/'  # datasets whose records carry 'identity_params'


def identity_targets(config: ml_collections.ConfigDict
                     ) -> input_pipeline.IdentityTargets | None:
  """The regression targets of loss.identity_params > 0 (synthetic identity parameters,
  standardised by the renderer's distribution, mark sides negated on flips), else None."""
  if float(config.loss.identity_params) <= 0:
    return None
  from fsjax.data import synthetic_faces  # pylint: disable=g-import-not-at-top
  mean, std = synthetic_faces.identity_statistics()
  sign = np.ones([synthetic_faces.IDENTITY_DIM], np.float32)
  for name in synthetic_faces.MIRRORED_IDENTITY_FIELDS:
    sign[synthetic_faces.IDENTITY_FIELDS.index(name)] = -1.0
  return input_pipeline.IdentityTargets('identity_params', mean, std, sign)


# What check_run raises for bad input (a command prints it as one line).
BAD_INPUT = (ValueError, workdir_lib.WorkdirError)


def check_run(config: ml_collections.ConfigDict, workdir: str, *, data_source: Any = None,
              identity_dir: str | None = None) -> str:
  """Checks what a run needs before it creates anything; returns the absolute workdir.

  Raises:
    ValueError: per_device_batch_size < 1.
    build_lib.DatasetError: an unknown dataset, or one neither prepared nor buildable here.
    paths.OutputError: the export folder exists and is not an identity checkpoint.
    workdir_lib.WorkdirError: a workdir that is a file, read-only or on a full disk.
  """
  if config.per_device_batch_size < 1:
    raise ValueError(f'per_device_batch_size={config.per_device_batch_size} must be >= 1')
  weight = float(config.loss.identity_params)
  if weight < 0:
    raise ValueError(f'loss.identity_params={weight} must be >= 0')
  if weight > 0 and data_source is None and not config.dataset.name.startswith(
      SYNTHETIC_PREFIX):
    raise ValueError(f'loss.identity_params={weight} regresses the renderer\'s identity '
                     f'parameters: it needs a {SYNTHETIC_PREFIX}* dataset, not '
                     f'{config.dataset.name!r} (set it to 0)')
  if data_source is None:
    build_lib.check_dataset(config.dataset.name, config.dataset.data_dir or None,
                            config.dataset.manual_dir or None,
                            manual_flag='--config.dataset.manual_dir')
  path = workdir_lib.check(workdir)
  identity_lib.check_output(export_path(config, path, identity_dir), overwrite=True)
  return path


def export_path(config: ml_collections.ConfigDict, workdir: str,
                identity_dir: str | None = None) -> str:
  """Where the trained encoder goes: identity_dir, config.export_dir or WORKDIR/identity."""
  return identity_dir or config.export_dir or os.path.join(workdir, identity_lib.IDENTITY_SUBDIR)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data_source: Any = None, eval_source: Any = None,
                       identity_dir: str | None = None,
                       stop_after: int | None = None) -> dict[str, Any]:
  """Trains the IResNet to config.num_train_steps (resuming from `workdir`), evaluates and
  exports it.

  Args:
    config: configs/arcface_*.py.
    workdir: run directory (checkpoints/, tensorboard/, eval.json, identity/).
    data_source: training records {'image' uint8 [112,112,3], 'label'} instead of
      config.dataset (tests); eval_source likewise for verification (None with a
      data_source: no verification unless given).
    identity_dir: where to export the encoder (default config.export_dir or
      WORKDIR/identity).
    stop_after: stop (with a checkpoint) at this step, before num_train_steps, e.g. to
      train in chunks in Colab; the next call resumes. No eval/export then.
  Returns:
    {'step', 'start_step' (0, or the step resumed from), 'identity_dir' (None when
    stopped early by SIGTERM), 'eval' (verification dict or None), 'train' (last logged
    train metrics), 'wall_s', 'state' (the final TrainState)}.
  Raises:
    The errors of check_run (nothing is created then); workdir_lib.WorkdirInUse when another
    run holds the workdir; KeyboardInterrupt on Ctrl-C, after a checkpoint of the step.
  """
  start_time = time.time()
  workdir = check_run(config, workdir, data_source=data_source, identity_dir=identity_dir)
  with workdir_lib.acquire(workdir, chief=jax.process_index() == 0):
    return _train(config, workdir, data_source, eval_source, identity_dir, stop_after,
                  start_time)


def _train(config, workdir, data_source, eval_source, identity_dir, stop_after, start_time):
  """train_and_evaluate in a checked, locked workdir."""
  chief = jax.process_index() == 0
  if data_source is None:
    data_source, default_eval = _data_sources(config)
    eval_source = eval_source if eval_source is not None else default_eval
  labels = input_pipeline.read_labels(data_source)
  num_classes = num_classes_of(config, labels)
  eval_labels = input_pipeline.read_labels(eval_source) if eval_source is not None else None

  mesh = parallel.make_mesh()
  num_devices = mesh.devices.size
  global_batch = int(config.per_device_batch_size) * num_devices
  targets = identity_targets(config)
  setup = lib.make_setup(config, num_classes, num_devices,
                         num_targets=0 if targets is None else len(targets.mean))
  logging.info('ArcFace: %d images, %d classes (class matrix %s, %d columns), %d devices, '
               'global batch %d, %d steps (%.1f epochs)', len(labels), num_classes,
               'sharded over devices' if setup.sharded else 'replicated',
               setup.padded_classes, num_devices, global_batch, config.num_train_steps,
               config.num_train_steps * global_batch / max(len(labels), 1))

  shapes = jax.eval_shape(lambda k: lib.create_train_state(config, k, setup),
                          jax.random.PRNGKey(0))
  shardings = lib.state_shardings(shapes, setup, mesh)
  data_iter = input_pipeline.create_identity_iterator(config, data_source,
                                                      seed=int(config.seed), labels=labels,
                                                      targets=targets)
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  init = jax.jit(lambda k: lib.create_train_state(config, k, setup), out_shardings=shardings)
  state, start_step = loop.restore_or_init(
      ckpt, checkpointing.abstract_like(shapes, shardings), data_iter,
      lambda: init(jax.random.PRNGKey(int(config.seed))))

  writer = metric_logging.MetricWriter(os.path.join(workdir, 'tensorboard'))
  if chief and start_step == 0:
    writer.write_text(0, 'config', '```\n' + str(config) + '\n```')
    logging.info('IResNet %.3fM params; class matrix %.3fM',
                 metric_logging.count_params(loop.to_host(state.params)) / 1e6,
                 num_classes * setup.backbone.embedding_dim / 1e6)

  train_step = lib.make_train_step(config, mesh, setup, shapes)
  merge = jax.jit(lambda a, b: a.merge(b), donate_argnums=0)
  embed_fn = lib.make_embed_fn(config, flip=bool(config.eval.flip))
  num_steps = int(config.num_train_steps)
  log_every = max(int(config.log_every_steps), 1)
  ckpt_every = int(config.checkpoint_every_steps)
  eval_every = int(config.eval_every_steps)
  max_nonfinite = int(config.max_nonfinite_steps)
  progress = metric_logging.Progress(num_steps, start_step, global_batch,
                                     main_keys=('loss', 'accuracy', 'lr') + (
                                         ('target_loss',) if targets is not None else ()),
                                     printer=(lambda s: logging.info('%s', s)) if chief
                                     else (lambda s: None))
  preemption = loop.PreemptionWatcher()
  accumulated, last_train, result = None, {}, None
  step = start_step

  def run_eval(step):
    variables = loop.to_host({'params': state.params, 'batch_stats': state.batch_stats})
    t0 = time.perf_counter()
    metrics = evaluate(config, variables, eval_source, eval_labels, embed_fn)
    logging.info('eval at step %d (%.1f s): verification accuracy %.4f (10-fold; best '
                 'threshold %.4f), TAR@FAR=%g %.4f on %d pairs of unseen identities', step,
                 time.perf_counter() - t0, metrics['accuracy'], metrics['best_accuracy'],
                 metrics['far'], metrics['tar_at_far'], metrics['num_pairs'])
    writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.items()})
    return metrics

  try:
    while step < num_steps:
      step += 1
      batch = parallel.shard_batch(next(data_iter), mesh)
      with jax.transfer_guard('disallow'):
        state, step_metrics = train_step(state, batch)
        accumulated = step_metrics if accumulated is None else merge(accumulated, step_metrics)
      is_last = step == num_steps
      if step % log_every == 0 or is_last:
        last_train = loop.log_interval(step, accumulated, progress, writer)
        accumulated = None
        loop.check_nonfinite(state, max_nonfinite, step, NONFINITE_ADVICE)
      if eval_source is not None and eval_every and step % eval_every == 0 and not is_last:
        run_eval(step)
      if (ckpt_every and step % ckpt_every == 0) or is_last:
        loop.check_nonfinite(state, max_nonfinite, step, NONFINITE_ADVICE)
        ckpt.save(step, state, data_iter, config)
      if stop_after is not None and step >= stop_after and not is_last:
        ckpt.save(step, state, data_iter, config)
        logging.info('stopping at step %d (stop_after); run again to resume', step)
        break
      if preemption.checkpoint_if_reached(step, ckpt, state, data_iter, config):
        break
    out = None
    if step >= num_steps:
      if eval_source is not None:
        result = run_eval(step)
        if chief:
          with open(os.path.join(workdir, 'eval.json'), 'w') as f:
            json.dump(dict(result, step=step, train=last_train), f, indent=2)
      variables = loop.to_host({'params': state.params, 'batch_stats': state.batch_stats})
      out = export_path(config, workdir, identity_dir)
      if chief:
        extra = {'steps': step}
        if result is not None:
          extra['verification'] = {k: result[k] for k in ('accuracy', 'best_accuracy',
                                                           'tar_at_far', 'far', 'num_pairs')}
        out = export_identity(out, variables, identity_meta(config, setup, **extra))
        logging.info('identity encoder written to %s', out)
    writer.flush()
  finally:
    loop.close_run(preemption, ckpt, writer, data_iter)
  return {'step': step, 'start_step': start_step, 'identity_dir': out, 'eval': result,
          'train': last_train, 'wall_s': time.time() - start_time, 'state': state}


# ----------------------------------------------------------------------------
# For fsjax.identity.resolve (configs with identity.auto_train train their own encoder).


def load_config(path: str) -> ml_collections.ConfigDict:
  """get_config() of an ArcFace config file (relative paths also resolved against the repo
  root)."""
  return config_files.load(path, 'ArcFace config')


def train_identity_checkpoint(arcface_config: str | ml_collections.ConfigDict, out: str,
                              workdir: str | None = None) -> str:
  """Trains the encoder of `arcface_config` and returns the identity dir `out`.

  The ArcFace run's checkpoints live in `workdir` (default `out` + '_arcface'), so an
  interrupted run resumes. Used by fsjax.identity.resolve.checkpoint_dir
  (config.identity.auto_train).
  """
  config = load_config(arcface_config) if isinstance(arcface_config, str) else arcface_config
  workdir = workdir or os.path.abspath(out) + '_arcface'
  result = train_and_evaluate(config, workdir, identity_dir=out)
  if result['identity_dir'] is None:
    raise RuntimeError(f'ArcFace training in {workdir} stopped before the last step '
                       '(preempted); run it again to resume')
  return result['identity_dir']
