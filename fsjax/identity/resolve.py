"""THE one way to get the identity encoder of a config: load, auto-train or random.

Training, export, bench and the random swapper all call `resolve(config, workdir)`:

  1. config.identity.checkpoint set: that directory (identity.json + variables/);
  2. else config.identity.allow_random (smoke tests, benchmarks): random weights of
     `layout(config)`, seeded by config.seed, the same on every call;
  3. else config.identity.auto_train names an ArcFace config (configs/synthetic.py):
     WORKDIR/identity, trained once on first use (`train=True`) and reused afterwards;
  4. else IdentityCheckpointError saying how to get one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import ml_collections

from fsjax import models
from fsjax.identity import checkpoint
from fsjax.models import arcface
from fsjax.models import random_weights

RANDOM_SEED_OFFSET = 7  # the random encoder's seed is config.seed + 7 (not G's or D's)


class IdentityCheckpointError(RuntimeError):
  """No usable identity-encoder checkpoint (the message says how to get one)."""


@dataclasses.dataclass(frozen=True)
class Resolved:
  """module: IResNet (compute dtype as asked); variables: {'params', 'batch_stats'};
  meta: identity.json dict (plus 'path' when loaded, 'random': True when random)."""
  module: Any
  variables: Any
  meta: dict


def instructions(config: ml_collections.ConfigDict) -> str:
  """How to get an identity checkpoint (the text of IdentityCheckpointError)."""
  return (
      'AEI-Net training needs a frozen ArcFace identity encoder: set '
      '--config.identity.checkpoint=DIR to a directory made by\n'
      '  fsjax convert-arcface backbone.pth DIR          (arcface_torch r18/34/50/100 '
      'weights, or an InsightFace ONNX recognizer such as w600k_r50.onnx), or\n'
      '  fsjax train-arcface --config configs/arcface_synthetic.py --workdir W   '
      '(trains one here; then DIR is what it reports).\n'
      'For a smoke test only, --config.identity.allow_random=True uses a random encoder '
      f'(arch {config.identity.arch!r}); it cannot learn identity swapping.')


def layout(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """IResNet layout {'layers', 'width', 'embedding_dim', 'bn_eps', 'stem_stride'} the config
  trains with, without reading weights.

  From identity.checkpoint's identity.json when set; else from the ArcFace config named by
  identity.auto_train; else the ARCHS entry identity.arch.
  """
  ident = config.identity
  if ident.checkpoint:
    meta = checkpoint.read_meta(os.path.expanduser(ident.checkpoint))
    return {'layers': tuple(meta['layers']), 'width': int(meta['width']),
            'embedding_dim': int(meta['embedding_dim']), 'bn_eps': float(meta['bn_eps']),
            'stem_stride': int(meta.get('stem_stride', 1))}  # older files lack the key
  if ident.auto_train:
    from fsjax.identity import train_lib  # pylint: disable=g-import-not-at-top
    from fsjax.train import config_files  # pylint: disable=g-import-not-at-top
    backbone = train_lib.build_backbone(config_files.load(ident.auto_train, 'ArcFace config'),
                                        axis_name=None)
    return {'layers': tuple(backbone.layers), 'width': backbone.width,
            'embedding_dim': backbone.embedding_dim, 'bn_eps': backbone.bn_eps,
            'stem_stride': backbone.stem_stride}
  layers, width, dim = arcface.ARCHS[ident.arch]
  return {'layers': tuple(layers), 'width': width, 'embedding_dim': dim, 'bn_eps': 1e-5,
          'stem_stride': 1}


def checkpoint_dir(config: ml_collections.ConfigDict, workdir: str, *, train: bool = True
                   ) -> str:
  """The identity checkpoint directory of a config that is not random (cases 1 and 3).

  Raises:
    IdentityCheckpointError: nothing to load (and nothing to train, or `train` is False).
  """
  path = os.path.expanduser(config.identity.checkpoint)
  if path:
    if not os.path.isfile(os.path.join(path, checkpoint.META_FILE)):
      raise IdentityCheckpointError(
          f'identity.checkpoint={path!r} is not an identity checkpoint (no identity.json).\n'
          + instructions(config))
    return path
  auto = config.identity.auto_train
  if auto:
    out = os.path.join(workdir, checkpoint.IDENTITY_SUBDIR)
    if os.path.isfile(os.path.join(out, checkpoint.META_FILE)):
      return out
    if train:
      from fsjax.identity import trainer  # pylint: disable=g-import-not-at-top
      logging.info('training the identity encoder of %s into %s (once; reused afterwards)',
                   auto, out)
      return trainer.train_identity_checkpoint(auto, out)
    raise IdentityCheckpointError(
        f'{out} has no identity encoder (identity.auto_train={auto!r} trains it on the first '
        '`fsjax train` of this workdir)')
  raise IdentityCheckpointError(instructions(config))


def check(config: ml_collections.ConfigDict) -> None:
  """Raises what `resolve` would for a missing encoder, reading no weights and training nothing.

  Raises:
    IdentityCheckpointError: identity.checkpoint without identity.json, an auto_train config
      file that does not exist, or none of checkpoint / allow_random / auto_train.
    ValueError: model.id_dim differs from the checkpoint's embedding size.
  """
  ident = config.identity
  if ident.checkpoint:
    meta = checkpoint.read_meta(checkpoint_dir(config, '', train=False))
    if int(meta['embedding_dim']) != config.model.id_dim:
      raise ValueError(f'model.id_dim={config.model.id_dim} but the identity encoder gives '
                       f'{meta["embedding_dim"]}-d embeddings; set '
                       f'--config.model.id_dim={meta["embedding_dim"]}')
  elif ident.allow_random:
    return
  elif ident.auto_train:
    from fsjax.train import config_files  # pylint: disable=g-import-not-at-top
    try:
      config_files.load(ident.auto_train, 'ArcFace config')
    except FileNotFoundError as e:
      raise IdentityCheckpointError(f'identity.auto_train: {e}') from None
  else:
    raise IdentityCheckpointError(instructions(config))


def random_encoder(config: ml_collections.ConfigDict, dtype: Any = 'float32',
                   axis_name: str | None = None) -> Resolved:
  """Random weights of `layout(config)`, seeded by config.seed (deterministic)."""
  meta = checkpoint.make_meta(**layout(config), alignment=config.dataset.alignment,
                              arch=config.identity.arch, random=True)
  module = models.build_identity(meta, dtype=dtype, axis_name=axis_name)
  variables = random_weights.random_variables(
      checkpoint.abstract_variables(module), int(config.seed) + RANDOM_SEED_OFFSET)
  return Resolved(module, jax.tree.map(jax.numpy.asarray, variables), meta)


def resolve(config: ml_collections.ConfigDict, workdir: str = '', *, train: bool = True,
            dtype: Any = None, axis_name: str | None = None) -> Resolved:
  """The identity encoder of `config` (module docstring: checkpoint | random | auto-train).

  Args:
    config: a training config (identity.*, model.id_dim, model.dtype, seed).
    workdir: the run directory (auto-trained encoders live in WORKDIR/identity).
    train: train an auto_train encoder that is missing (False: raise instead).
    dtype: compute dtype of the module (default config.model.dtype).
    axis_name: BatchNorm axis (train mode only).

  Raises:
    IdentityCheckpointError: no encoder to load or train.
    ValueError: model.id_dim differs from the encoder's embedding size.
  """
  dtype = dtype or config.model.dtype
  if config.identity.allow_random and not config.identity.checkpoint:
    logging.warning('identity.allow_random=True: RANDOM identity encoder (arch %r); the '
                    'swap cannot learn identities (smoke test only)', config.identity.arch)
    found = random_encoder(config, dtype, axis_name)
  else:
    path = checkpoint_dir(config, workdir, train=train)
    module, variables, meta = checkpoint.load_identity(path, dtype=dtype, axis_name=axis_name)
    found = Resolved(module, variables, dict(meta, path=path))
  if found.module.embedding_dim != config.model.id_dim:
    raise ValueError(f'model.id_dim={config.model.id_dim} but the identity encoder gives '
                     f'{found.module.embedding_dim}-d embeddings; set '
                     f'--config.model.id_dim={found.module.embedding_dim}')
  return found
