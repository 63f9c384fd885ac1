"""Fine-tuning: a fresh AEI-Net run that starts from pretrained weights (config.init_from).

config.init_from names either
  * a swapper export (`fsjax convert-generator`, `fsjax export`): G = its generator, D = its
    training-side discriminator when it carries one (fsjax.swap.export: `discriminator/`),
    else D starts random;
  * a training workdir: G, EMA and D of its newest checkpoint.
Optimizer states start fresh; the step counter starts at 0. With identity.checkpoint '' the
identity encoder is the source's (an export's own encoder, or the one a workdir trained
with), copied once into WORKDIR/identity so the run stays self-contained; a source whose
encoder was random leaves the config's identity settings alone.

The source must build exactly the config's networks: image_size and every model field that
changes what G computes (id_normalize included) must agree, and the discriminator's fields
when D is taken from it; a disagreement is a ValueError naming the field and the override
that fixes it. Once WORKDIR has checkpoints the run resumes from them and init_from only
keeps pointing identity.checkpoint at WORKDIR/identity (pass the same command to resume).

Reading exports here (aei sits below swap) uses their on-disk layout only: EXPORT_FILES,
the same names as fsjax/swap/export.py (a test keeps them equal).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from fsjax.aei import train_lib
from fsjax.data import paths
from fsjax.identity import checkpoint as identity_checkpoint
from fsjax.identity import resolve
from fsjax.train import checkpointing
from fsjax.train import parallel

# fsjax.swap.export's layout: swapper.json, variables/ {'generator', 'identity'},
# discriminator/ (optional); and its format name.
EXPORT_FILES = ('swapper.json', 'variables', 'discriminator')
EXPORT_FORMAT = 'fsjax-swapper'
# config.model fields that change how G computes, not what (free to differ from the source).
COMPUTE_FIELDS = ('dtype', 'remat', 'aad_merge_attr_convs')
D_FIELDS = ('num_d', 'n_layers', 'ndf', 'max_channels', 'norm')


@dataclasses.dataclass(frozen=True)
class Source:
  """What init_from points at (read from its metadata only).

  Attributes:
    path: absolute path.
    kind: 'export' | 'workdir'.
    image_size: the source's resolution.
    model: its config.model fields (as stored).
    alignment: its data alignment.
    discriminator: its config.discriminator fields, or None (an export without D).
    step: the workdir checkpoint used (kind 'workdir').
    meta: swapper.json (export) or the stored config (workdir).
  """
  path: str
  kind: str
  image_size: int
  model: dict
  alignment: str
  discriminator: Optional[dict]
  step: Optional[int]
  meta: dict


def read_source(path: str) -> Source:
  """The Source at `path`; ValueError when it is neither an export nor a workdir."""
  path = paths.absolute(path)
  meta_file, _, _ = EXPORT_FILES
  if os.path.isfile(os.path.join(path, meta_file)):
    with open(os.path.join(path, meta_file)) as f:
      meta = json.load(f)
    if not isinstance(meta, dict) or meta.get('format') != EXPORT_FORMAT:
      raise ValueError(f'init_from={path}: {meta_file} is not an fsjax swapper export')
    return Source(path, 'export', int(meta['image_size']), dict(meta['model']),
                  str(meta['alignment']), meta.get('discriminator'), None, meta)
  steps = checkpointing.finished_steps(path) if os.path.isdir(path) else []
  if steps:
    stored = _stored_config(path, steps[-1])
    return Source(path, 'workdir', int(stored['image_size']), dict(stored['model']),
                  str(stored['dataset']['alignment']), dict(stored['discriminator']),
                  steps[-1], stored)
  raise ValueError(f'init_from={path} is neither an fsjax export ({meta_file}) nor a training '
                   'workdir with a finished checkpoint')


def _stored_config(workdir: str, step: int) -> dict:
  """The config JSON saved with a step (read only: the source workdir is never touched)."""
  step_dir = os.path.join(workdir, 'checkpoints', str(step), checkpointing.CONFIG)
  return dict(ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step_dir))


def _same(a: Any, b: Any) -> bool:
  norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v
  return norm(a) == norm(b)


def _override(key: str, value: Any) -> str:
  value = ','.join(str(v) for v in value) if isinstance(value, (list, tuple)) else value
  return f'--config.{key}={value}'


def _d_widths(fields: Any) -> list[int]:
  """The conv widths of a pix2pixHD discriminator: ndf doubling per layer, capped."""
  return [min(int(fields['ndf']) * 2 ** k, int(fields['max_channels']))
          for k in range(int(fields['n_layers']) + 1)]


def check_compatible(config: ml_collections.ConfigDict, source: Source) -> None:
  """Raises ValueError naming the first field where the source's networks differ."""
  if int(config.image_size) != source.image_size:
    raise ValueError(f'init_from={source.path} is a {source.image_size} px model but '
                     f'image_size={config.image_size}; set '
                     f'{_override("image_size", source.image_size)}')
  for key, value in source.model.items():
    if key in COMPUTE_FIELDS or key not in config.model:
      continue
    if not _same(config.model[key], value):
      raise ValueError(f'init_from={source.path} has model.{key}={value!r} but the config '
                       f'says {config.model[key]!r}; set {_override("model." + key, value)}')
  if source.discriminator is not None:
    for key in D_FIELDS:
      mine, theirs = config.discriminator[key], source.discriminator[key]
      if key == 'max_channels':  # a cap the widths never reach is the same network
        mine, theirs = _d_widths(config.discriminator), _d_widths(source.discriminator)
      if not _same(mine, theirs):
        raise ValueError(
            f'init_from={source.path} has discriminator.{key}={source.discriminator[key]!r} '
            f'but the config says {config.discriminator[key]!r}; set '
            f'{_override("discriminator." + key, source.discriminator[key])}')
  if source.alignment != config.dataset.alignment:
    logging.warning('init_from=%s was trained on %r-aligned faces, this run on %r ones',
                    source.path, source.alignment, config.dataset.alignment)


# ------------------------------------------------------------------------------------------
# Identity encoder.


def _source_encoder(source: Source) -> Optional[dict]:
  """The layout (identity.json fields) of the source's encoder, reading no weights; None
  when it was random (allow_random smoke runs)."""
  if source.kind == 'export':
    meta = dict(source.meta['identity'])
    return None if meta.get('random') else meta
  stored = ml_collections.ConfigDict(source.meta)
  if stored.identity.allow_random and not stored.identity.checkpoint:
    return None
  resolve.check(stored)  # the source's encoder must still be where it was
  return resolve.layout(stored)


def _source_identity(source: Source) -> Optional[tuple[dict, Any]]:
  """(identity.json meta, variables) of the source's encoder; None for a random one."""
  if _source_encoder(source) is None:
    return None
  if source.kind == 'export':
    meta = dict(source.meta['identity'])
    module = identity_checkpoint.module_from_meta(meta)
    tree = _restore(os.path.join(source.path, EXPORT_FILES[1]),
                    {'identity': identity_checkpoint.abstract_variables(module)})
    return meta, tree['identity']
  stored = ml_collections.ConfigDict(source.meta)
  found = resolve.resolve(stored, source.path, train=False, dtype='float32')
  return {k: v for k, v in found.meta.items() if k != 'path'}, found.variables


def supplies_identity(config: ml_collections.ConfigDict) -> bool:
  """Whether the run's identity encoder comes from init_from (identity.checkpoint '')."""
  return bool(config.init_from) and not config.identity.checkpoint


def check(config: ml_collections.ConfigDict) -> None:
  """What `prepare` and `initialize` would refuse, reading metadata only (no weights).

  Replaces resolve.check for runs with init_from (the encoder may come from the source).

  Raises:
    ValueError: init_from is neither an export nor a workdir, or builds other networks
      (check_compatible), or its encoder's size differs from model.id_dim.
    resolve.IdentityCheckpointError: as resolve.check, when the encoder does not come
      from init_from.
  """
  if not config.init_from:
    resolve.check(config)
    return
  source = read_source(config.init_from)
  check_compatible(config, source)
  encoder = _source_encoder(source) if supplies_identity(config) else None
  if encoder is None:  # the config's own encoder (given, random or auto-trained)
    resolve.check(config)
  elif int(encoder['embedding_dim']) != int(config.model.id_dim):
    dim = int(encoder['embedding_dim'])
    raise ValueError(f'init_from={source.path} has a {dim}-d identity encoder but '
                     f'model.id_dim={config.model.id_dim}; set --config.model.id_dim={dim}')


def prepare(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """The config the run trains with: with identity.checkpoint = WORKDIR/identity when the
  encoder comes from init_from (copied there on the first start, by process 0).

  Returns `config` itself when nothing changes (no init_from, or a given or random encoder).
  """
  if not supplies_identity(config):
    return config
  out = os.path.join(workdir, identity_checkpoint.IDENTITY_SUBDIR)
  if not os.path.isfile(os.path.join(out, identity_checkpoint.META_FILE)):
    found = _source_identity(read_source(config.init_from))
    if found is None:
      return config  # the source's encoder was random: the config's own settings apply
    if jax.process_index() == 0:
      meta, variables = found
      identity_checkpoint.save_identity(out, variables, dict(meta, source={
          'init_from': paths.absolute(config.init_from), 'source': meta.get('source', {})}))
      logging.info('identity encoder of init_from=%s copied to %s', config.init_from, out)
    parallel.barrier('fsjax_init_from_identity')
  config = copy.deepcopy(config)
  config.identity.checkpoint = out
  return config


# ------------------------------------------------------------------------------------------
# Weights.


def _restore(directory: str, target: Any) -> Any:
  """Numpy arrays of the `target` part of an Orbax tree (ShapeDtypeStructs), shape-checked."""
  ckptr = ocp.PyTreeCheckpointer()
  try:
    stored = ckptr.metadata(directory).item_metadata.tree
    _check_shapes(target, stored, directory)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    return ckptr.restore(directory, args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True))
  finally:
    ckptr.close()


def _check_shapes(target: Any, stored: Any, where: str) -> None:
  """ValueError naming the first array of `target` that `stored` lacks or shapes otherwise."""
  have = {jax.tree_util.keystr(p): tuple(getattr(x, 'shape', ()))
          for p, x in jax.tree_util.tree_flatten_with_path(stored)[0]}
  for p, x in jax.tree_util.tree_flatten_with_path(target)[0]:
    key = jax.tree_util.keystr(p)
    if key not in have:
      raise ValueError(f'init_from: {where} lacks {key} (another model layout)')
    if have[key] != tuple(x.shape):
      raise ValueError(f'init_from: {where} has {key} of shape {have[key]}, the config\'s '
                       f'model needs {tuple(x.shape)}')


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def load_weights(config: ml_collections.ConfigDict, state: train_lib.TrainState
                 ) -> dict[str, Any]:
  """The source's weights shaped like `state`: {'g_params', 'g_batch_stats', 'ema_params'}
  plus 'd_params', 'd_batch_stats' when it has a discriminator (numpy)."""
  source = read_source(config.init_from)
  check_compatible(config, source)
  g = {'params': state.g_params, 'batch_stats': state.g_batch_stats}
  g = {k: v for k, v in g.items() if v}
  d = {'params': state.d_params, 'batch_stats': state.d_batch_stats}
  d = {k: v for k, v in d.items() if v}
  if source.kind == 'export':
    _, variables_dir, d_dir = EXPORT_FILES
    tree = _restore(os.path.join(source.path, variables_dir), {'generator': _abstract(g)})
    out = {'g_params': tree['generator']['params'],
           'g_batch_stats': tree['generator'].get('batch_stats', {}),
           'ema_params': tree['generator']['params']}
    if source.discriminator is not None:
      tree = _restore(os.path.join(source.path, d_dir), _abstract(d))
      out.update(d_params=tree['params'], d_batch_stats=tree.get('batch_stats', {}))
    return out
  step_dir = os.path.join(source.path, 'checkpoints', str(source.step), checkpointing.STATE)
  target = {'g_params': state.g_params, 'g_batch_stats': state.g_batch_stats,
            'ema_params': state.ema_params, 'd_params': state.d_params,
            'd_batch_stats': state.d_batch_stats}
  return _restore(step_dir, _abstract({k: v for k, v in target.items() if v}))


def initialize(config: ml_collections.ConfigDict, state: train_lib.TrainState, mesh,
               g_tx, d_tx) -> train_lib.TrainState:
  """A fresh state (step 0, from `trainer.init_state`) with init_from's weights, replicated
  on `mesh`; `state` itself when config.init_from is ''."""
  if not config.init_from:
    return state
  weights = load_weights(config, state)
  logging.info('initialised G%s from init_from=%s', ' and D' if 'd_params' in weights else
               ' (D random: the source has none)', config.init_from)
  weights = parallel.replicate(weights, mesh)
  fill = jax.jit(lambda s, w: train_lib.with_initial_weights(s, w, g_tx, d_tx),
                 out_shardings=parallel.replicated_sharding(mesh))
  return fill(state, weights)

