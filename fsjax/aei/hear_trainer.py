"""The HEAR-Net training loop (`fsjax train-hear`): occluded pairs, checkpoints, logs.

`train_and_evaluate(config, workdir, stage1)` is the whole run (and the Colab API); the
step is fsjax/aei/hear_train_lib.py, the loop toolkit fsjax/train/. The frozen stage 1
(`Stage1`: AEI-Net with its EMA variables and identity encoder) is passed in: the command
reads it from an AEI export or workdir (`stage1_from_bundle(fsjax.swap.export.load_bundle
(path))`). What the loop does:

  * data: config.dataset pairs (same-identity ratio 0.5, X_t = X_s there) with occluders
    pasted on every target (config.hear.*: the user's RGBA cut-outs or the built-in
    procedural set; paper mix none / hand / object / both), optionally only the
    config.hear.hardest_fraction of images with the largest heuristic error
    mean|X - AEI(X, z_id(X))|, scored once and cached in WORKDIR/hardest.json;
  * resume from WORKDIR/hear_checkpoints (state + data-iterator position), SIGTERM / Ctrl-C
    checkpoint, non-finite guard, workdir lock, as the AEI trainer;
  * process 0 writes TensorBoard and sample grids X_s | X_t | Y_hat | Y | heuristic error
    (| blend mask m, for a blend_mask HEAR-Net).
"""

import dataclasses
import functools
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fsjax.aei import hear_train_lib as lib
from fsjax.data import build as build_lib
from fsjax.data import input_pipeline
from fsjax.data import occluders as occluders_lib
from fsjax.train import checkpointing
from fsjax.train import loop
from fsjax.train import metric_logging
from fsjax.train import parallel
from fsjax.train import workdir as workdir_lib

CHECKPOINT_SUBDIR = 'hear_checkpoints'  # not 'checkpoints': a HEAR workdir is no AEI workdir
HARDEST_FILE = 'hardest.json'
SAMPLE_ROWS = 8
NONFINITE_ADVICE = 'Lower optimizer.learning_rate or set optimizer.grad_clip_norm.'


@dataclasses.dataclass(frozen=True)
class Stage1:
  """The frozen AEI-Net HEAR-Net refines: networks, their variables and where they came from.

  Attributes:
    aei: hear_train_lib.FrozenAEI (generator, identity encoder, crop mode, z_id handling).
    generator_variables: {'params' (EMA), 'batch_stats'} of the generator.
    identity_variables: {'params', 'batch_stats'} of the encoder.
    image_size: the generator's S.
    source: the AEI export or workdir path (recorded with the HEAR-Net).
  """
  aei: lib.FrozenAEI
  generator_variables: Any
  identity_variables: Any
  image_size: int
  source: str


def stage1_from_bundle(bundle: Any, source: str) -> Stage1:
  """Stage1 from an fsjax.swap.export.Bundle (an AEI export or training workdir)."""
  meta = bundle.meta
  aei = lib.FrozenAEI(bundle.generator, bundle.identity_module, meta['identity_crop_mode'],
                      bool(meta['model']['id_normalize']))
  return Stage1(aei, bundle.generator_variables, bundle.identity_variables,
                int(meta['image_size']), os.path.abspath(source))


def check_config(config: ml_collections.ConfigDict, stage1: Stage1) -> None:
  """Raises ValueError for settings that cannot work (sizes, batch, fractions, mix)."""
  if config.image_size != stage1.image_size:
    raise ValueError(f'config.image_size={config.image_size} but the AEI-Net of '
                     f'{stage1.source} swaps {stage1.image_size} px faces')
  levels = len(config.hear.channels)
  if config.image_size % (2 ** levels):
    raise ValueError(f'image_size {config.image_size} is not divisible by 2**{levels} '
                     '(len(hear.channels))')
  if config.per_device_batch_size < 1:
    raise ValueError('per_device_batch_size must be >= 1')
  if not 0.0 < config.hear.hardest_fraction <= 1.0:
    raise ValueError(f'hear.hardest_fraction must be in (0, 1], got '
                     f'{config.hear.hardest_fraction}')
  occluders_lib.sample_mix(np.random.default_rng(0), config.hear.occluder_mix)  # validates
  if config.loss.mask and not config.hear.blend_mask:
    raise ValueError('loss.mask > 0 needs hear.blend_mask=True (it trains the blend mask)')
  if config.hear.mask_channels:
    if not config.hear.blend_mask:
      raise ValueError('hear.mask_channels needs hear.blend_mask=True (it gives the mask)')
    levels = len(config.hear.mask_channels)
    if levels < 2 or config.image_size % (2 ** levels):
      raise ValueError(f'hear.mask_channels={tuple(config.hear.mask_channels)}: needs >= 2 '
                       f'levels and image_size {config.image_size} divisible by 2**{levels}')
  if config.hear.keep_swap and not config.hear.mask_channels:
    raise ValueError('hear.keep_swap needs hear.mask_channels (the mask U-Net is its only one)')
  if config.hear.mask_threshold and not config.hear.blend_mask:
    raise ValueError('hear.mask_threshold > 0 needs hear.blend_mask=True (it hardens the mask)')
  if not 0.0 <= config.hear.mask_threshold < 1.0:
    raise ValueError(f'hear.mask_threshold must be in [0, 1), got {config.hear.mask_threshold}')


def make_occlusion(config: ml_collections.ConfigDict):
  """occlusion(uint8 [S, S, 3], rng) -> (uint8 [S, S, 3], bool [S, S] pasted mask) for the
  pair pipeline (picklable)."""
  hear = config.hear
  cutouts = occluders_lib.build_occluders(
      hear.occluders_dir or None, seed=int(config.seed),
      num_procedural=hear.num_procedural_occluders, size=hear.procedural_occluder_size)

  return functools.partial(_occlude_image, occluders=cutouts, mix=tuple(hear.occluder_mix),
                           scale=tuple(hear.occluder_scale),
                           max_rotation=float(hear.occluder_max_rotation),
                           face_box=tuple(hear.occluder_face_box))


def _occlude_image(image, rng, **kwargs):
  occluded, mask, _ = occluders_lib.occlude(image, rng, **kwargs)
  return occluded, mask


def hardest_subset(config: ml_collections.ConfigDict, workdir: str, source: Any,
                   stage1: Stage1, mesh) -> Any:
  """The config.hear.hardest_fraction of `source` with the largest heuristic error.

  Scores every record once with the frozen AEI-Net (batched, replicated inference) and
  caches the chosen indices in WORKDIR/hardest.json, keyed by the AEI source, the fraction
  and the record count (a change re-scores).
  """
  fraction = float(config.hear.hardest_fraction)
  if fraction >= 1.0:
    return source
  n = len(source)
  key = {'aei': stage1.source, 'fraction': fraction, 'num_records': n}
  path = os.path.join(workdir, HARDEST_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      cached = json.load(f)
    if cached.get('key') == key:
      return input_pipeline.SubsetSource(source, cached['indices'])
  err = lib.heuristic_error(stage1.aei)
  g_vars = parallel.replicate(stage1.generator_variables, mesh)
  id_vars = parallel.replicate(stage1.identity_variables, mesh)
  batch = int(config.hear.score_batch_size)
  scores = np.empty([n], np.float32)
  t0 = time.perf_counter()
  for start in range(0, n, batch):
    idx = range(start, min(n, start + batch))
    images = np.stack([np.asarray(source[i]['image']) for i in idx])
    pad = batch - len(images)  # one shape: one compilation
    if pad:
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    scores[start:start + len(idx)] = np.asarray(err(g_vars, id_vars, jnp.asarray(images)))[
        :len(idx)]
    if start // batch % 50 == 0:
      logging.info('heuristic error: %d / %d images scored (%.0f s)', start + len(idx), n,
                   time.perf_counter() - t0)
  keep = max(1, int(round(fraction * n)))
  indices = np.sort(np.argsort(-scores, kind='stable')[:keep])
  if jax.process_index() == 0:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump({'key': key, 'indices': indices.tolist(),
                 'threshold': float(scores[indices].min()),
                 'mean_error': float(scores.mean())}, f)
    os.replace(tmp, path)
  logging.info('HEAR-Net trains on the %d of %d images with the largest heuristic error '
               '(>= %.4f; mean %.4f)', keep, n, float(scores[indices].min()),
               float(scores.mean()))
  return input_pipeline.SubsetSource(source, indices)


def with_own_occluders(config: ml_collections.ConfigDict, source: Any) -> Any:
  """`source` whose records carry their own occluders' masks (synthetic_faces glasses and
  hands, rendered again once here) when config.dataset.own_occluder_masks, else itself."""
  if not config.dataset.own_occluder_masks:
    return source
  t0 = time.perf_counter()

  def progress(done, total):
    if done == total or done % (50 * 64) == 0:
      logging.info('own occluder masks: %d / %d occluded records rendered (%.0f s)', done,
                   total, time.perf_counter() - t0)

  masks = input_pipeline.own_occluder_masks(source, int(config.image_size), progress=progress)
  logging.info('dataset.own_occluder_masks: %d of %d records draw an occluder (%.1f %% of '
               'their pixels)', int(masks.any(axis=(1, 2)).sum()), len(source),
               100.0 * float(masks.mean()))
  return input_pipeline.WithOwnOccluders(source, masks)


# What check_run raises for bad input (a command prints it as one line).
BAD_INPUT = (ValueError, workdir_lib.WorkdirError)


def check_run(config: ml_collections.ConfigDict, workdir: str, stage1: Stage1, *,
              data_source: Any = None) -> str:
  """Checks everything a run needs before it creates anything; returns the absolute workdir.

  Raises:
    ValueError: bad settings (`check_config`); build_lib.DatasetError (a ValueError): a
      dataset neither prepared nor buildable (only without a `data_source`).
    workdir_lib.WorkdirError: a workdir that is a file, read-only or on a full disk.
  """
  check_config(config, stage1)
  if data_source is None:
    build_lib.check_dataset(config.dataset.name, config.dataset.data_dir or None,
                            config.dataset.manual_dir or None,
                            manual_flag='--config.dataset.manual_dir')
  if config.hear.occluders_dir:
    occluders_lib.load_occluders(config.hear.occluders_dir)  # refuses a bad folder
  return workdir_lib.check(workdir)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stage1: Stage1, *,
                       data_source: Any = None) -> lib.HearState:
  """Trains HEAR-Net to config.num_train_steps on top of `stage1`, resuming from `workdir`.

  Args:
    config: configs/hear_*.py.
    workdir: run directory (hear_checkpoints/, tensorboard/, samples/, hardest.json).
    stage1: the frozen AEI-Net (`stage1_from_bundle`).
    data_source: records {'image', 'label'} instead of config.dataset (tests, Colab).
  Returns:
    The final HearState (replicated).
  """
  workdir = check_run(config, workdir, stage1, data_source=data_source)
  with workdir_lib.acquire(workdir, chief=jax.process_index() == 0):
    return _train(config, workdir, stage1, data_source)


def _train(config, workdir, stage1: Stage1, data_source) -> lib.HearState:
  """train_and_evaluate in a checked, locked workdir."""
  chief = jax.process_index() == 0
  mesh = parallel.make_mesh()
  global_batch = int(config.per_device_batch_size) * mesh.devices.size
  hear = lib.build_hear(config)
  tx = lib.make_optimizer(config)
  g_vars = parallel.replicate(stage1.generator_variables, mesh)
  id_vars = parallel.replicate(stage1.identity_variables, mesh)

  if data_source is None:
    data_source = loop.training_source(config.dataset)
  data_source = loop.drop_occluded_if_asked(config.dataset, data_source)
  data_source = hardest_subset(config, workdir, data_source, stage1, mesh)
  data_source = with_own_occluders(config, data_source)
  occlusion = make_occlusion(config)
  data_iter = input_pipeline.create_pair_iterator(config, data_source, seed=int(config.seed),
                                                  occlusion=occlusion)

  rep = parallel.replicated_sharding(mesh)
  create = lambda key: lib.create_state(config, key, hear, tx)
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.keep_checkpoints,
                                    keep_period=config.keep_period, subdir=CHECKPOINT_SUBDIR)
  state, start_step = loop.restore_or_init(
      ckpt, checkpointing.abstract_like(jax.eval_shape(create, jax.random.PRNGKey(0)), rep),
      data_iter, lambda: jax.jit(create, out_shardings=rep)(jax.random.PRNGKey(int(config.seed))))

  writer = metric_logging.MetricWriter(os.path.join(workdir, 'tensorboard'))
  if chief and start_step == 0:
    writer.write_text(0, 'config', '```\n' + str(config) + f'\naei: {stage1.source}\n```')
    logging.info('HEAR-Net %.2fM params, on top of %s',
                 metric_logging.count_params(loop.to_host(state.params)) / 1e6, stage1.source)

  num_steps = int(config.num_train_steps)
  train_step = lib.make_train_step(config, mesh, hear, stage1.aei, tx)
  refine = lib.make_refine_fn(hear, stage1.aei)
  sample_every = int(config.sample_every_steps)
  samples = _sample_batch(config, data_source, mesh, occlusion) if sample_every else None
  merge = jax.jit(lambda a, b: a.merge(b), donate_argnums=0)
  log_every = max(int(config.log_every_steps), 1)
  ckpt_every = int(config.checkpoint_every_steps)
  max_nonfinite = int(config.max_nonfinite_steps)
  progress = metric_logging.Progress(num_steps, start_step, global_batch,
                                     main_keys=('loss', 'id', 'chg', 'rec', 'occ', 'mask'))
  preemption = loop.PreemptionWatcher()
  accumulated = None
  step = start_step
  try:
    while step < num_steps:
      step += 1
      batch = parallel.shard_batch(next(data_iter), mesh)
      with jax.transfer_guard('disallow'):
        state, step_metrics = train_step(state, batch, g_vars, id_vars)
        accumulated = step_metrics if accumulated is None else merge(accumulated, step_metrics)
      is_last = step == num_steps
      if step % log_every == 0 or is_last:
        loop.log_interval(step, accumulated, progress, writer)
        accumulated = None
        loop.check_nonfinite(state, max_nonfinite, step, NONFINITE_ADVICE)
      if samples is not None and (step % sample_every == 0 or is_last):
        hear_vars = {'params': state.params, 'batch_stats': state.batch_stats}
        y_hat, y, error, *mask = loop.to_host(refine(hear_vars, g_vars, id_vars,
                                                     samples['source'], samples['target']))
        # m (blend_mask) in [0, 1] shown white where X_t shows through.
        masks = [np.repeat(m[..., None] * 2.0 - 1.0, 3, axis=-1) for m in mask]
        path = metric_logging.save_sample_grid(
            workdir, step, [loop.to_host(samples['source']), loop.to_host(samples['target']),
                            y_hat, y, np.clip(np.abs(error) * 2.0 - 1.0, -1.0, 1.0)] + masks,
            writer)
        if path:
          logging.info('samples (X_s | X_t | Y_hat | Y | |dY_t|%s): %s',
                       ' | m' if masks else '', path)
      if (ckpt_every and step % ckpt_every == 0) or is_last:
        loop.check_nonfinite(state, max_nonfinite, step, NONFINITE_ADVICE)
        ckpt.save(step, state, data_iter, config)
      if preemption.checkpoint_if_reached(step, ckpt, state, data_iter, config):
        break
    writer.flush()
  finally:
    loop.close_run(preemption, ckpt, writer, data_iter)
  return state


def _sample_batch(config, data_source, mesh, occlusion) -> dict[str, Any]:
  """A fixed batch of SAMPLE_ROWS occluded pairs (identical on every host), replicated."""
  it = input_pipeline.create_pair_iterator(
      config, data_source, seed=int(config.seed) + 1, process_index=0, process_count=1,
      batch_size=min(SAMPLE_ROWS, len(data_source)), num_workers=0, occlusion=occlusion)
  try:
    batch = next(it)
  finally:
    if hasattr(it, 'close'):
      it.close()
  return parallel.replicate({'source': batch['source'], 'target': batch['target']}, mesh)


def load_hear(workdir: str, step: int | None = None) -> tuple[Any, dict[str, Any]]:
  """({'params', 'batch_stats'} numpy, the run's config dict) of a HEAR workdir's newest (or
  `step`) checkpoint, read-only (for `fsjax export --hear`)."""
  workdir = os.path.abspath(workdir)
  steps = checkpointing.finished_steps(workdir, CHECKPOINT_SUBDIR)
  if not steps:
    raise ValueError(f'{workdir} has no finished HEAR-Net checkpoint in {CHECKPOINT_SUBDIR}/')
  step = steps[-1] if step is None else step
  if step not in steps:
    raise ValueError(f'no HEAR-Net checkpoint of step {step} in {workdir} (have {steps})')
  config, items = checkpointing.restore_items(workdir, step, ('params', 'batch_stats'),
                                              CHECKPOINT_SUBDIR)
  return {'params': items['params'], 'batch_stats': items['batch_stats']}, dict(config, step=step)
