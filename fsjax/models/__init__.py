"""fsjax models: builders from the config (AEI-Net generator, discriminator, identity encoder).

Each `build_*` returns an unbound Flax module; initialise it with `module.init(...)`.
"""

from typing import Any

import ml_collections

from fsjax.models import aei_net
from fsjax.models import discriminator


def build_generator(config: ml_collections.ConfigDict, axis_name: str | None = None) -> Any:
  """AEINet from config.model.

  Args:
    config: the full config (uses config.model).
    axis_name: BatchNorm statistics axis, e.g. 'data' when called inside shard_map.

  Returns:
    aei_net.AEINet: `__call__(x_t [B,S,S,3] in [-1,1], z_id [B,id_dim], train)`
    -> (y [B,S,S,3] in [-1,1], z_att tuple); `attributes(x, train)` -> z_att tuple.
  """
  return aei_net.from_config(config.model, axis_name=axis_name)


def build_discriminator(config: ml_collections.ConfigDict,
                        axis_name: str | None = None) -> Any:
  """MultiscaleDiscriminator from config.discriminator, compute dtype config.model.dtype.

  Returns:
    discriminator.MultiscaleDiscriminator: `__call__(x [B,S,S,3], train)` -> list of
    num_d logit maps [B,h,w,1], full resolution first.
  """
  return discriminator.from_config(config.discriminator, axis_name=axis_name,
                                   dtype=config.model.dtype)


def build_identity(config_or_meta: Any, dtype: Any = None, axis_name: str | None = None) -> Any:
  """IResNet identity encoder (module only; weights: fsjax.identity.load_identity).

  Args:
    config_or_meta: one of
      - an identity.json dict (keys layers, width, embedding_dim, bn_eps);
      - config.identity (or the full config): uses the identity.json in
        `identity.checkpoint` when set, else `identity.arch` (ARCHS name) but only with
        `identity.allow_random=True` (smoke tests).
    dtype: compute dtype; default config.model.dtype for a full config, else 'float32'.
    axis_name: BatchNorm statistics axis (train mode inside shard_map).

  Returns:
    arcface.IResNet: `__call__(x [B,112,112,3] in [-1,1], train)` -> [B,D] (not normalised).

  Raises:
    ValueError: no checkpoint and allow_random is off (the message says how to get one), or
      the full config's model.id_dim differs from the encoder's embedding size.
  """
  from fsjax import identity as identity_lib  # pylint: disable=g-import-not-at-top
  from fsjax.models import arcface  # pylint: disable=g-import-not-at-top

  if isinstance(config_or_meta, dict) and 'layers' in config_or_meta:
    return identity_lib.module_from_meta(config_or_meta, dtype=dtype or 'float32',
                                         axis_name=axis_name)
  config = config_or_meta
  full = config if 'identity' in config else None
  ident = full.identity if full is not None else config
  if dtype is None:
    dtype = full.model.dtype if full is not None and 'model' in full else 'float32'
  if ident.get('checkpoint'):
    module = identity_lib.module_from_meta(identity_lib.read_meta(ident.checkpoint),
                                           dtype=dtype, axis_name=axis_name)
  elif ident.get('allow_random', False):
    module = arcface.iresnet(ident.arch, dtype=dtype, axis_name=axis_name)
  else:
    raise ValueError(
        'no identity encoder: set --config.identity.checkpoint=DIR, a directory made by '
        '`fsjax convert-arcface backbone.pth|model.onnx DIR` (pretrained arcface_torch / '
        'InsightFace weights) or by `fsjax train-arcface --config configs/arcface_synthetic.py '
        '--workdir W`; only smoke tests may use --config.identity.allow_random=True')
  if full is not None and 'model' in full and full.model.get('id_dim') is not None:
    if int(full.model.id_dim) != module.embedding_dim:
      raise ValueError(f'config.model.id_dim={full.model.id_dim} but the identity encoder '
                       f'gives {module.embedding_dim}-d embeddings')
  return module
