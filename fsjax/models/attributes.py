"""The multi-level attribute encoder of AEI-Net (a U-Net), in Flax linen (NHWC).

Down path: len(channels) x [Conv 4x4 s2 p1 (no bias) -> BatchNorm -> LeakyReLU(0.1)].
Up path: len(channels) - 1 x [ConvTranspose 4x4 s2 p1 (no bias) -> BN -> LReLU(0.1)], each
concatenated with the down feature of the same size. The last level is a bilinear x2
(align_corners=True) of the one before, so there are len(channels) + 1 levels. With the
paper widths (32, 64, 128, 256, 512, 1024, 1024) at 256 px:

  z1 2x2x1024, z2 4x4x2048, z3 8x8x1024, z4 16x16x512, z5 32x32x256, z6 64x64x128,
  z7 128x128x64, z8 256x256x64.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.models import cpu_conv
from fsjax.models import layers

Dtype = Any


def attribute_channels(channels: Sequence[int], full_res_channels: int = 0) -> tuple[int, ...]:
  """Channel count of every z_att level (z1 first) for the encoder widths `channels`."""
  channels = tuple(channels)
  out = [channels[-1]]
  for c in reversed(channels[:-1]):
    out.append(2 * c)
  out.append(out[-1] + full_res_channels)  # bilinear x2 of the previous level (++ full res)
  return tuple(out)


class AttributeEncoder(nn.Module):
  """U-Net attribute encoder.

  Attributes:
    channels: down-path widths, e.g. (32, 64, 128, 256, 512, 1024, 1024); the input size
      must be divisible by 2**len(channels).
    dtype: compute dtype (parameters stay float32).
    axis_name: mapped axis name over which BatchNorm averages its statistics (None: local).
    full_res_channels: 0 (the paper): the last level is only the bilinear x2 of the one
      before, so no attribute is read at full resolution; > 0: that many channels of
      [Conv 3x3 of the input -> BN -> LReLU(0.1)] are concatenated to it (an fsjax option,
      config.model.attr_full_res_channels; at 64 px the paper's last level holds 32 px detail).
  """
  channels: Sequence[int] = (32, 64, 128, 256, 512, 1024, 1024)
  full_res_channels: int = 0
  dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    """Encodes the target's attributes.

    Args:
      x: [B, S, S, 3] image in [-1, 1].
      train: BatchNorm uses batch statistics (and updates 'batch_stats') when True.

    Returns:
      Tuple of len(channels) + 1 maps, smallest first: z1 [B, S/2**n, S/2**n, channels[-1]],
      ..., z_{n+1} [B, S, S, 2 * channels[0]], n = len(channels); in the compute dtype.
    """
    x = x.astype(self.dtype)
    downs = []
    h = x
    for i, c in enumerate(self.channels):
      h = cpu_conv.Conv(c, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                        kernel_init=layers.conv_init, dtype=self.dtype, name=f'down{i}_conv')(h)
      h = layers.batch_norm(train, self.axis_name, self.dtype, f'down{i}_bn')(h)
      h = nn.leaky_relu(h, 0.1)
      downs.append(h)

    z = [downs[-1]]
    h = downs[-1]
    for j, c in enumerate(reversed(self.channels[:-1])):
      h = cpu_conv.ConvTranspose(c, (4, 4), (2, 2), ((1, 1), (1, 1)),
                                 kernel_init=layers.conv_init, dtype=self.dtype,
                                 name=f'up{j}_conv')(h)
      h = layers.batch_norm(train, self.axis_name, self.dtype, f'up{j}_bn')(h)
      h = nn.leaky_relu(h, 0.1)
      h = jnp.concatenate([h, downs[-2 - j]], axis=-1)
      z.append(h)
    top = layers.upsample2x(h)
    if self.full_res_channels:
      f = cpu_conv.Conv(self.full_res_channels, (3, 3), padding=((1, 1), (1, 1)),
                        use_bias=False, kernel_init=layers.conv_init, dtype=self.dtype,
                        name='full_res_conv')(x)
      f = layers.batch_norm(train, self.axis_name, self.dtype, 'full_res_bn')(f)
      top = jnp.concatenate([top, nn.leaky_relu(f, 0.1)], axis=-1)
    z.append(top)
    return tuple(z)
