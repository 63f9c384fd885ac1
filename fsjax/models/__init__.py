"""fsjax models: builders from the config (AEI-Net generator, discriminator, identity encoder).

Each `build_*` returns an unbound Flax module; initialise it with `module.init(...)`.
"""

from typing import Any, Mapping

import ml_collections

from fsjax.models import aei_net
from fsjax.models import arcface
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


def build_identity(meta: Mapping[str, Any], dtype: Any = 'float32',
                   axis_name: str | None = None) -> arcface.IResNet:
  """IResNet identity encoder of an identity.json layout (module only; the weights come from
  fsjax.identity: `checkpoint.load_identity`, or `resolve.resolve(config, workdir)`).

  Args:
    meta: keys layers, width, embedding_dim, bn_eps, optionally stem_stride (older files
      lack it: 1).
    dtype: compute dtype.
    axis_name: BatchNorm statistics axis (train mode inside shard_map).

  Returns:
    arcface.IResNet: `__call__(x [B, 112, 112, 3] in [-1, 1], train)` -> [B, D] (not
    normalised).
  """
  return arcface.IResNet(layers=tuple(meta['layers']), width=int(meta['width']),
                         embedding_dim=int(meta['embedding_dim']), bn_eps=float(meta['bn_eps']),
                         stem_stride=int(meta.get('stem_stride', 1)),
                         dtype=dtype, axis_name=axis_name)
