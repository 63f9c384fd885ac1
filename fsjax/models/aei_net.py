"""AEI-Net (FaceShifter stage 1): attribute encoder + AAD generator, built from config.model."""

from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections

from fsjax.models import aad
from fsjax.models import attributes
from fsjax.models import layers


class AEINet(nn.Module):
  """Adaptive Embedding Integration Network.

  Attributes mirror config.model (see configs/default.py): attr_channels, gen_channels,
  id_dim (only documents the expected z_id size; Dense layers take any), aad_norm,
  aad_att_kernel, aad_mask_channels, conv_bias, dtype (name or jnp dtype), remat,
  aad_merge_attr_convs, aad_num_blocks, attr_full_res_channels;
  axis_name: BatchNorm statistics axis (e.g. 'data' inside shard_map), None = local.
  """
  attr_channels: Sequence[int] = (32, 64, 128, 256, 512, 1024, 1024)
  gen_channels: Sequence[int] = (1024, 1024, 1024, 1024, 512, 256, 128, 64)
  id_dim: int = 512
  aad_norm: str = 'instance'
  aad_att_kernel: int = 1
  aad_mask_channels: str = 'one'
  conv_bias: bool = False
  dtype: Any = 'float32'
  remat: bool = False
  aad_merge_attr_convs: bool = False
  aad_num_blocks: int = 2
  attr_full_res_channels: int = 0
  axis_name: str | None = None

  def setup(self):
    if len(self.gen_channels) != len(self.attr_channels) + 1:
      raise ValueError(f'gen_channels needs len(attr_channels) + 1 = '
                       f'{len(self.attr_channels) + 1} entries, got {len(self.gen_channels)}')
    dtype = layers.get_dtype(self.dtype)
    self.encoder = attributes.AttributeEncoder(
        channels=tuple(self.attr_channels), full_res_channels=self.attr_full_res_channels,
        dtype=dtype, axis_name=self.axis_name)
    self.generator = aad.AADGenerator(
        channels=tuple(self.gen_channels), conv_bias=self.conv_bias, norm=self.aad_norm,
        att_kernel=self.aad_att_kernel, mask_channels=self.aad_mask_channels, dtype=dtype,
        axis_name=self.axis_name, remat=self.remat,
        merge_attr_convs=self.aad_merge_attr_convs, num_blocks=self.aad_num_blocks)

  def attributes(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    """z_att pyramid of x [B, S, S, 3] in [-1, 1]: len(attr_channels) + 1 maps, smallest first."""
    return self.encoder(x, train)

  def __call__(self, x_t: jax.Array, z_id: jax.Array,
               train: bool = False) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Swaps the identity z_id onto the target x_t.

    Args:
      x_t: [B, S, S, 3] target image in [-1, 1], S = 2**len(attr_channels) * 2.
      z_id: [B, id_dim] source identity embedding.
      train: BatchNorm mode; in train mode apply with mutable=['batch_stats'].

    Returns:
      (y [B, S, S, 3] float32 in [-1, 1], z_att(x_t) tuple in the compute dtype).
    """
    z_att = self.encoder(x_t, train)
    y = self.generator(z_att, z_id, train)
    return y, z_att


def from_config(model_config: ml_collections.ConfigDict, axis_name: str | None = None) -> AEINet:
  """AEINet from config.model."""
  return AEINet(
      attr_channels=tuple(model_config.attr_channels),
      gen_channels=tuple(model_config.gen_channels),
      id_dim=model_config.id_dim,
      aad_norm=model_config.aad_norm,
      aad_att_kernel=model_config.aad_att_kernel,
      aad_mask_channels=model_config.aad_mask_channels,
      conv_bias=model_config.conv_bias,
      dtype=model_config.dtype,
      remat=model_config.remat,
      aad_merge_attr_convs=bool(model_config.aad_merge_attr_convs),
      aad_num_blocks=model_config.aad_num_blocks,
      attr_full_res_channels=int(model_config.attr_full_res_channels),
      axis_name=axis_name)
