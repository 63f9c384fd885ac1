"""Adaptive Attentional Denormalization (AAD): the layer, the residual block and the generator.

AAD layer (h_in [B,H,W,C], z_att [B,H,W,Ca], z_id [B,D]):
  h = norm(h_in)                                    instance (no affine) | batch
  A = conv_g(z_att) * h + conv_b(z_att)             conv kxk, bias, k = att_kernel (1 | 3)
  I = dense_g(z_id) * h + dense_b(z_id)             Dense D -> C
  M = sigmoid(conv_m(h))                            conv kxk (same k), bias, 1 | C channels
  h_out = (1 - M) * A + M * I
The two published variants: taotaonice (instance, k=1, 1-channel mask, 184.34M G+E) and
mindslab (batch, k=3, C-channel mask, biased ResBlk convs; 439.31M with a 256-d z_id).

conv_g and conv_b see only z_att, which a ResBlk's two or three AAD layers share: with
merge_attr_convs the ResBlk runs all of them as one convolution (fewer, larger GEMMs, z_att
read once; same parameters, same result).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fsjax.models import cpu_conv
from fsjax.models import layers

Dtype = Any


class AADLayer(nn.Module):
  """One AAD layer; output channels = input channels.

  Attributes:
    norm: 'instance' (InstanceNorm without affine, eps 1e-5) or 'batch' (BatchNorm, affine).
    att_kernel: kernel size (1 or 3, 'same' padding) of the gamma/beta attribute convs and
      of the mask conv.
    mask_channels: 'one' (a single attention map) or 'full' (one per channel).
    dtype: compute dtype.
    axis_name: BatchNorm statistics axis (norm='batch' only).
  """
  norm: str = 'instance'
  att_kernel: int = 1
  mask_channels: str = 'one'
  dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, h: jax.Array, z_att: jax.Array, z_id: jax.Array,
               train: bool = False,
               att_maps: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """Applies AAD.

    Args:
      h: [B, H, W, C] activations.
      z_att: [B, H, W, Ca] attribute map of the same spatial size.
      z_id: [B, D] identity vector.
      train: BatchNorm mode (norm='batch' only).
      att_maps: (conv_g(z_att), conv_b(z_att)), [B, H, W, C] each, computed by the caller
        from `attribute_params` (AADResBlock.merge_attr_convs); None: computed here.

    Returns:
      [B, H, W, C] in the compute dtype.
    """
    c = h.shape[-1]
    h = h.astype(self.dtype)
    z_att = z_att.astype(self.dtype)
    z_id = z_id.astype(self.dtype)
    if self.norm == 'instance':
      h = layers.instance_norm(h)
    elif self.norm == 'batch':
      h = layers.batch_norm(train, self.axis_name, self.dtype, 'norm')(h)
    else:
      raise ValueError(f'unknown AAD norm {self.norm!r}')
    if self.mask_channels not in ('one', 'full'):
      raise ValueError(f'unknown mask_channels {self.mask_channels!r}')
    if self.att_kernel not in (1, 3):
      raise ValueError(f'att_kernel must be 1 or 3, got {self.att_kernel}')

    k, p = self.att_kernel, self.att_kernel // 2

    def conv(features, name):
      return cpu_conv.Conv(features, (k, k), padding=((p, p), (p, p)), use_bias=True,
                           kernel_init=layers.conv_init, dtype=self.dtype, name=name)

    def dense(name):
      return nn.Dense(c, kernel_init=layers.dense_init, bias_init=nn.initializers.zeros,
                      dtype=self.dtype, name=name)

    if att_maps is None:
      att_maps = (conv(c, 'att_gamma')(z_att), conv(c, 'att_beta')(z_att))
    a = att_maps[0] * h + att_maps[1]
    gamma_id = dense('id_gamma')(z_id)[:, None, None, :]
    beta_id = dense('id_beta')(z_id)[:, None, None, :]
    i = gamma_id * h + beta_id
    m = nn.sigmoid(conv(1 if self.mask_channels == 'one' else c, 'mask')(h))
    return (1 - m) * a + m * i

  def attribute_params(self) -> list[jax.Array]:
    """[gamma kernel [k, k, Ca, C], gamma bias [C], beta kernel, beta bias] (float32).

    Read from the bound variables, so only after initialisation.
    """
    params = self.variables['params']
    return [params[name][leaf] for name in ('att_gamma', 'att_beta')
            for leaf in ('kernel', 'bias')]


def merged_attribute_maps(aads: Sequence[AADLayer], z_att: jax.Array, att_kernel: int,
                          dtype: Dtype) -> list[tuple[jax.Array, jax.Array]]:
  """Every layer's (conv_g(z_att), conv_b(z_att)) from one convolution over z_att.

  Args:
    aads: initialised AAD layers that share z_att.
    z_att: [B, H, W, Ca].
    att_kernel: their kernel size k ('same' padding).
    dtype: compute dtype.
  Returns:
    One ([B, H, W, C], [B, H, W, C]) pair per layer, in `dtype`.
  """
  params = [p for layer in aads for p in layer.attribute_params()]
  kernel = jnp.concatenate(params[0::2], axis=-1).astype(dtype)
  bias = jnp.concatenate(params[1::2]).astype(dtype)
  p = att_kernel // 2
  maps = cpu_conv.conv_general_dilated(
      z_att.astype(dtype), kernel, (1, 1), ((p, p), (p, p)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + bias
  sizes = [b.shape[0] for b in params[1::2]]
  parts = jnp.split(maps, list(np.cumsum(sizes)[:-1]), axis=-1)
  return list(zip(parts[0::2], parts[1::2]))


class AADResBlock(nn.Module):
  """AAD ResBlk: AAD -> ReLU -> Conv3x3(cin->cin) -> AAD -> ReLU -> Conv3x3(cin->cout) + skip.

  That is num_blocks = 2 units [AAD -> ReLU -> Conv3x3], the last one cin -> cout (GHOST
  also ships 1 and 3; parameters aad{i}, conv{i}, i = 1..num_blocks). The skip is the
  identity when cin == cout, else AAD -> ReLU -> Conv3x3(cin->cout) (aad_skip, conv_skip).

  Attributes:
    out_channels: cout.
    num_blocks: [AAD -> ReLU -> Conv3x3] units on the main path (>= 1).
    conv_bias: bias on the 3x3 convs (False: taotaonice, True: mindslab).
    norm, att_kernel, mask_channels, dtype, axis_name: see AADLayer.
    merge_attr_convs: compute the AAD layers' attribute convs as one (`merged_attribute_maps`;
      used once the parameters exist, so `init` takes the separate path).
  """
  out_channels: int
  conv_bias: bool = False
  norm: str = 'instance'
  att_kernel: int = 1
  mask_channels: str = 'one'
  dtype: Dtype = jnp.float32
  axis_name: str | None = None
  merge_attr_convs: bool = False
  num_blocks: int = 2

  @nn.compact
  def __call__(self, h: jax.Array, z_att: jax.Array, z_id: jax.Array,
               train: bool = False) -> jax.Array:
    """[B, H, W, cin], [B, H, W, Ca], [B, D] -> [B, H, W, cout] (compute dtype)."""
    cin = h.shape[-1]
    if self.num_blocks < 1:
      raise ValueError(f'num_blocks must be >= 1, got {self.num_blocks}')

    def aad(name):
      return AADLayer(norm=self.norm, att_kernel=self.att_kernel,
                      mask_channels=self.mask_channels, dtype=self.dtype,
                      axis_name=self.axis_name, name=name)

    def conv(features, name):
      return cpu_conv.Conv(features, (3, 3), padding=((1, 1), (1, 1)), use_bias=self.conv_bias,
                           kernel_init=layers.conv_init, dtype=self.dtype, name=name)

    n = self.num_blocks
    names = [f'aad{i}' for i in range(1, n + 1)] + (
        ['aad_skip'] if cin != self.out_channels else [])
    aads = [aad(name) for name in names]
    maps = [None] * len(aads)
    if self.merge_attr_convs and not self.is_initializing():
      maps = merged_attribute_maps(aads, z_att, self.att_kernel, self.dtype)
    y = h
    for i in range(n):
      y = nn.relu(aads[i](y, z_att, z_id, train, maps[i]))
      y = conv(self.out_channels if i == n - 1 else cin, f'conv{i + 1}')(y)
    if cin != self.out_channels:
      h = nn.relu(aads[n](h, z_att, z_id, train, maps[n]))
      h = conv(self.out_channels, 'conv_skip')(h)
    return y + h.astype(self.dtype)


class AADGenerator(nn.Module):
  """The AAD generator: z_id and the z_att pyramid -> image.

  z_id [B, D] -> ConvTranspose(k=2, s=1) on a 1x1 map -> [B, 2, 2, channels[0]], then one
  AADResBlock per level (block i: channels[i] -> channels[i+1], the last -> 3, conditioned on
  z_att[i]), bilinear x2 (align_corners=True) after every block but the last, tanh.

  Attributes:
    channels: input width of each block, e.g. (1024, 1024, 1024, 1024, 512, 256, 128, 64).
    conv_bias, norm, att_kernel, mask_channels, dtype, axis_name, merge_attr_convs,
      num_blocks: see AADResBlock.
    remat: rematerialise each ResBlk in the backward pass (saves activation memory).
  """
  channels: Sequence[int] = (1024, 1024, 1024, 1024, 512, 256, 128, 64)
  conv_bias: bool = False
  norm: str = 'instance'
  att_kernel: int = 1
  mask_channels: str = 'one'
  dtype: Dtype = jnp.float32
  axis_name: str | None = None
  remat: bool = False
  merge_attr_convs: bool = False
  num_blocks: int = 2

  @nn.compact
  def __call__(self, z_att: Sequence[jax.Array], z_id: jax.Array,
               train: bool = False) -> jax.Array:
    """Generates the swap.

    Args:
      z_att: len(channels) maps, z_att[0] [B, 2, 2, *], each next one twice the size.
      z_id: [B, D] identity vector.
      train: BatchNorm mode (norm='batch' only).

    Returns:
      [B, S, S, 3] float32 image in [-1, 1], S = 2**len(channels).
    """
    if len(z_att) != len(self.channels):
      raise ValueError(f'{len(z_att)} attribute levels for {len(self.channels)} blocks')
    z_id = z_id.astype(self.dtype)
    h = z_id[:, None, None, :]
    h = nn.ConvTranspose(self.channels[0], (2, 2), strides=(1, 1), padding=((1, 1), (1, 1)),
                         use_bias=True, transpose_kernel=True, kernel_init=layers.conv_init,
                         dtype=self.dtype, name='id_proj')(h)
    block_cls = nn.remat(AADResBlock, static_argnums=(4,)) if self.remat else AADResBlock
    outs = tuple(self.channels[1:]) + (3,)
    for i, (z, cout) in enumerate(zip(z_att, outs)):
      h = block_cls(out_channels=cout, conv_bias=self.conv_bias, norm=self.norm,
                    att_kernel=self.att_kernel, mask_channels=self.mask_channels,
                    dtype=self.dtype, axis_name=self.axis_name,
                    merge_attr_convs=self.merge_attr_convs, num_blocks=self.num_blocks,
                    name=f'block{i}')(
                        h, z, z_id, train)
      if i < len(outs) - 1:
        h = layers.upsample2x(h)
    return jnp.tanh(h.astype(jnp.float32))
