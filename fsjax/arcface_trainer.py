"""The ArcFace training loop (`fsjax train-arcface`): data, checkpoints, eval, identity export.

`train_and_evaluate(config, workdir)` is the whole run (and the Colab API); the math is
fsjax/arcface_train_lib.py. It shares the AEI trainer's machinery: parallel.py (mesh,
data-parallel step), checkpointing.py (Orbax: state + grain iterator position + config,
exact resume), metric_logging.py (TensorBoard, console progress/ETA) and trainer.py's
helpers (dataset build on first use, SIGTERM handling, host transfer).

A run writes into WORKDIR:
  checkpoints/<step>/   train state (class matrix sharded when large), data iterator, config
  tensorboard/          train/* scalars, eval/* verification figures
  eval.json             the last verification result (unseen identities)
  identity/             the exported encoder (identity.json + Orbax variables), loadable with
                        fsjax.load_identity_encoder / usable as config.identity.checkpoint

Verification: the images of config.eval.split (synthetic_faces: 'test' = held-out
identities, never seen in training) are embedded (inference-mode BatchNorm, image +
mirror), and deterministic pairs (`arcface_train_lib.make_pairs`: all or
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

from fsjax import arcface_train_lib as lib
from fsjax import checkpointing
from fsjax import config_files
from fsjax import input_pipeline
from fsjax import metric_logging
from fsjax import parallel
from fsjax import trainer as aei_trainer

IDENTITY_SUBDIR = 'identity'
SYNTHETIC_CONFIG = 'configs/arcface_synthetic.py'


def _data_sources(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
  """(train source, eval source) of config.dataset; fsjax datasets are built when missing."""
  train = aei_trainer.get_data_source(config)  # builds synthetic_faces on first use
  eval_split = config.eval.get('split', '')
  test = input_pipeline.create_data_source(config.dataset, eval_split) if eval_split else None
  return train, test


def num_classes_of(config: ml_collections.ConfigDict, labels: np.ndarray) -> int:
  """config.fc.num_classes, or max(label) + 1 when it is 0 (checked against the labels)."""
  n = int(config.fc.get('num_classes', 0) or 0)
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
  max_images = int(ev.get('max_images', 0) or 0)
  if max_images and n > max_images:
    keep = np.sort(np.random.default_rng(int(ev.get('seed', 0))).choice(n, max_images,
                                                                       replace=False))
  else:
    keep = np.arange(n)
  embed_fn = embed_fn or lib.make_embed_fn(config, flip=bool(ev.get('flip', True)))
  batch_size = int(ev.get('batch_size', 256))
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
  pairs, same = lib.make_pairs(labels[keep], int(ev.get('num_pairs', 3000)),
                               seed=int(ev.get('seed', 0)))
  return lib.verification_metrics(embeddings, pairs, same, folds=int(ev.get('folds', 10)),
                                  far=float(ev.get('far', 1e-3)))


def identity_meta(config: ml_collections.ConfigDict, setup: lib.Setup, **extra) -> dict:
  """identity.json of the trained backbone (alignment = config.dataset.alignment)."""
  from fsjax import identity as identity_lib  # pylint: disable=g-import-not-at-top
  m = setup.backbone
  return identity_lib.make_meta(m.layers, m.width, m.embedding_dim, m.bn_eps,
                                stem_stride=m.stem_stride,
                                alignment=config.dataset.get('alignment', 'arcface'),
                                source='fsjax train-arcface',
                                training_data=config.dataset.name, **extra)


def export_identity(directory: str, variables: Any, meta: dict) -> str:
  """Writes the identity checkpoint dir (fsjax.identity.save_identity, replaced if present)."""
  from fsjax import identity as identity_lib  # pylint: disable=g-import-not-at-top
  return identity_lib.save_identity(directory, jax.device_get(variables), meta, overwrite=True)


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
  """
  start_time = time.time()
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
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
  setup = lib.make_setup(config, num_classes, num_devices)
  logging.info('ArcFace: %d images, %d classes (class matrix %s, %d columns), %d devices, '
               'global batch %d, %d steps (%.1f epochs)', len(labels), num_classes,
               'sharded over devices' if setup.sharded else 'replicated',
               setup.padded_classes, num_devices, global_batch, config.num_train_steps,
               config.num_train_steps * global_batch / max(len(labels), 1))

  shapes = jax.eval_shape(lambda k: lib.create_train_state(config, k, setup),
                          jax.random.PRNGKey(0))
  shardings = lib.state_shardings(shapes, setup, mesh)
  data_iter = input_pipeline.create_identity_iterator(config, data_source,
                                                      seed=int(config.seed), labels=labels)
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.get('keep_checkpoints', 2))
  restored = ckpt.restore_latest(checkpointing.abstract_like(shapes, shardings), data_iter)
  if restored is not None:
    state, start_step = restored.state, restored.step
    logging.info('resuming from step %d', start_step)
  else:
    init = jax.jit(lambda k: lib.create_train_state(config, k, setup), out_shardings=shardings)
    state, start_step = init(jax.random.PRNGKey(int(config.seed))), 0

  writer = metric_logging.MetricWriter(os.path.join(workdir, 'tensorboard'))
  if chief and start_step == 0:
    writer.write_text(0, 'config', '```\n' + str(config) + '\n```')
    logging.info('IResNet %.3fM params; class matrix %.3fM',
                 metric_logging.count_params(aei_trainer.to_host(state.params)) / 1e6,
                 num_classes * setup.backbone.embedding_dim / 1e6)

  train_step = lib.make_train_step(config, mesh, setup, shapes)
  merge = jax.jit(lambda a, b: a.merge(b), donate_argnums=0)
  embed_fn = lib.make_embed_fn(config, flip=bool(config.eval.get('flip', True)))
  num_steps = int(config.num_train_steps)
  log_every = max(int(config.log_every_steps), 1)
  ckpt_every = int(config.get('checkpoint_every_steps', 0) or 0)
  eval_every = int(config.get('eval_every_steps', 0) or 0)
  max_nonfinite = int(config.get('max_nonfinite_steps', 20) or 0)
  progress = metric_logging.Progress(num_steps, start_step, global_batch,
                                     main_keys=('loss', 'accuracy', 'lr'),
                                     printer=(lambda s: logging.info('%s', s)) if chief
                                     else (lambda s: None))
  preemption = aei_trainer.PreemptionWatcher()
  accumulated, last_train, result = None, {}, None
  step = start_step

  def run_eval(step):
    variables = aei_trainer.to_host({'params': state.params, 'batch_stats': state.batch_stats})
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
        last_train = {k: float(v) for k, v in aei_trainer.to_host(accumulated).compute().items()}
        accumulated = None
        timing = progress.update(step, last_train)
        writer.write_scalars(step, {f'train/{k}': v for k, v in last_train.items()})
        writer.write_scalars(step, {f'perf/{k}': v for k, v in timing.items()})
        _check_nonfinite(state, max_nonfinite, step)
      if eval_source is not None and eval_every and step % eval_every == 0 and not is_last:
        run_eval(step)
      if (ckpt_every and step % ckpt_every == 0) or is_last:
        _check_nonfinite(state, max_nonfinite, step)
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
      variables = aei_trainer.to_host({'params': state.params, 'batch_stats': state.batch_stats})
      out = identity_dir or config.get('export_dir', '') or os.path.join(workdir, IDENTITY_SUBDIR)
      if chief:
        extra = {'steps': step}
        if result is not None:
          extra['verification'] = {k: result[k] for k in ('accuracy', 'best_accuracy',
                                                           'tar_at_far', 'far', 'num_pairs')}
        out = export_identity(out, variables, identity_meta(config, setup, **extra))
        logging.info('identity encoder written to %s', out)
    writer.flush()
  finally:
    aei_trainer.close_run(preemption, ckpt, writer, data_iter)
  return {'step': step, 'start_step': start_step, 'identity_dir': out, 'eval': result,
          'train': last_train, 'wall_s': time.time() - start_time, 'state': state}


def _check_nonfinite(state, max_nonfinite: int, step: int) -> None:
  if max_nonfinite <= 0:
    return
  count = int(aei_trainer.to_host(state.nonfinite_count))
  if count >= max_nonfinite:
    raise aei_trainer.NonFiniteError(
        f'step {step}: the last {count} ArcFace steps had non-finite loss or gradients '
        f'(limit max_nonfinite_steps={max_nonfinite}); lower optimizer.learning_rate, raise '
        'optimizer.warmup_steps or use loss.margin_warmup_steps.')


# ----------------------------------------------------------------------------
# Hooks for the AEI trainer (configs/synthetic.py trains its own identity encoder).


def load_config(path: str) -> ml_collections.ConfigDict:
  """get_config() of an ArcFace config file (relative paths also resolved against the repo
  root)."""
  return config_files.load(path, 'ArcFace config')


def train_identity_checkpoint(arcface_config: str | ml_collections.ConfigDict, out: str,
                              workdir: str | None = None) -> str:
  """Trains the encoder of `arcface_config` and returns the identity dir `out`.

  The ArcFace run's checkpoints live in `workdir` (default `out` + '_arcface'), so an
  interrupted run resumes. Used by fsjax.trainer.ensure_identity_checkpoint
  (config.identity.auto_train).
  """
  config = load_config(arcface_config) if isinstance(arcface_config, str) else arcface_config
  workdir = workdir or os.path.abspath(out) + '_arcface'
  result = train_and_evaluate(config, workdir, identity_dir=out)
  if result['identity_dir'] is None:
    raise RuntimeError(f'ArcFace training in {workdir} stopped before the last step '
                       '(preempted); run it again to resume')
  return result['identity_dir']


def train_synthetic_identity(workdir: str) -> str:
  """Trains configs/arcface_synthetic.py in `workdir`; returns WORKDIR/identity."""
  return train_identity_checkpoint(SYNTHETIC_CONFIG, os.path.join(workdir, IDENTITY_SUBDIR),
                                   workdir=workdir)
