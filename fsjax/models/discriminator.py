"""pix2pixHD multi-scale PatchGAN discriminator in Flax linen (NHWC), no sigmoid.

One PatchGAN per scale (separate weights). Each: Conv 4x4 s2 pad 2 (ndf) -> LReLU(0.2);
n_layers - 1 x [Conv 4x4 s2 pad 2 -> norm -> LReLU(0.2)] doubling the width (capped at
max_channels); Conv 4x4 s1 pad 2 -> norm -> LReLU(0.2); Conv 4x4 s1 pad 2 -> 1 logit channel.
All convs have a bias. Between scales: AvgPool 3x3 s2 pad 1, padding not counted.
Params over 3 scales at ndf 64 (instance norm): 8.29M / 33.46M / 46.05M for n_layers 3/5/6.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.models import cpu_conv
from fsjax.models import layers

Dtype = Any

# pix2pixHD `weights_init`: conv N(0, 0.02); BatchNorm scale N(1, 0.02), bias 0.
_conv_init = nn.initializers.normal(stddev=0.02)


def _bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class PatchDiscriminator(nn.Module):
  """One pix2pixHD NLayerDiscriminator (see the module docstring)."""
  n_layers: int = 3
  ndf: int = 64
  max_channels: int = 512
  norm: str = 'instance'
  dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """[B, H, W, C] -> [B, h, w, 1] logits (compute dtype)."""
    if self.norm not in ('instance', 'batch', 'none'):
      raise ValueError(f'unknown discriminator norm {self.norm!r}')

    def conv(features, stride, name):
      return cpu_conv.Conv(features, (4, 4), strides=(stride, stride), padding=((2, 2), (2, 2)),
                           use_bias=True, kernel_init=_conv_init, dtype=self.dtype, name=name)

    def norm(h, name):
      if self.norm == 'instance':
        return layers.instance_norm(h)
      if self.norm == 'batch':
        return layers.batch_norm(train, self.axis_name, self.dtype, name,
                                 scale_init=_bn_scale_init)(h)
      return h

    h = nn.leaky_relu(conv(self.ndf, 2, 'conv0')(x.astype(self.dtype)), 0.2)
    nf = self.ndf
    for i in range(1, self.n_layers + 1):
      nf = min(nf * 2, self.max_channels)
      stride = 2 if i < self.n_layers else 1
      h = conv(nf, stride, f'conv{i}')(h)
      h = nn.leaky_relu(norm(h, f'norm{i}'), 0.2)
    return conv(1, 1, f'conv{self.n_layers + 1}')(h)


class MultiscaleDiscriminator(nn.Module):
  """num_d PatchGANs on the input downsampled 0, 1, ... num_d - 1 times.

  Attributes:
    num_d: number of scales.
    n_layers: stride-2 convs per PatchGAN (3: mindslab, 5: GHOST, 6: taotaonice).
    ndf: width of the first conv.
    max_channels: width cap.
    norm: 'instance' (no affine) | 'batch' | 'none'.
    dtype: compute dtype (name or jnp dtype).
    axis_name: BatchNorm statistics axis.
  """
  num_d: int = 3
  n_layers: int = 6
  ndf: int = 64
  max_channels: int = 512
  norm: str = 'instance'
  dtype: Any = 'float32'
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
    """Scores real/fake patches.

    Args:
      x: [B, S, S, 3] image in [-1, 1].
      train: BatchNorm mode (norm='batch' only).

    Returns:
      num_d float32 logit maps [B, h_k, w_k, 1], the full-resolution scale first.
    """
    dtype = layers.get_dtype(self.dtype)
    out = []
    h = x.astype(dtype)
    for k in range(self.num_d):
      d = PatchDiscriminator(n_layers=self.n_layers, ndf=self.ndf,
                             max_channels=self.max_channels, norm=self.norm, dtype=dtype,
                             axis_name=self.axis_name, name=f'scale{k}')
      out.append(d(h, train).astype(jnp.float32))
      if k < self.num_d - 1:
        h = layers.avg_pool_3x3_s2(h)
    return out


def from_config(d_config, axis_name: str | None = None,
                dtype: Any = 'float32') -> MultiscaleDiscriminator:
  """MultiscaleDiscriminator from config.discriminator (compute dtype from config.model)."""
  return MultiscaleDiscriminator(
      num_d=d_config.num_d, n_layers=d_config.n_layers, ndf=d_config.ndf,
      max_channels=d_config.max_channels, norm=d_config.norm, dtype=dtype,
      axis_name=axis_name)
