"""ArcFace identity encoder: IResNet laid out exactly like arcface_torch, and the 112 crop.

Layer order, names and flatten order follow insightface's arcface_torch `iresnet.py`,
so a `backbone.pth` converts 1:1 (see fsjax/arcface_convert.py):

  stem:   conv1 3x3 (3 -> width, stride 1, no bias) -> bn1 -> prelu (per channel)
          (`stem_stride=2`, an fsjax option for small CPU encoders: stride 2, 4 x 4 head)
  layerK: IBasicBlock x layers[K-1]; the first block of each stage has stride 2 and a
          1x1-conv + BN shortcut ("downsample"); stage widths width * (1, 2, 4, 8)
  block:  bn1 -> conv1 3x3 -> bn2 -> prelu -> conv2 3x3 (stride) -> bn3, + shortcut,
          no activation after the add
  head:   bn2 (2d) -> flatten in C, H, W order (7 x 7 x 8*width) -> fc (Dense -> D)
          -> features (BatchNorm1d with its scale frozen at 1: `use_scale=False`)

Every BatchNorm uses the same epsilon `bn_eps` (1e-5 in arcface_torch, 2e-5 in MXNet
models) and Flax momentum 0.9 (= PyTorch momentum 0.1).
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fsjax.models import cpu_conv
from fsjax.models import layers as layers_lib

# name -> (blocks per stage, width, embedding size)
ARCHS = {
    'r18': ((2, 2, 2, 2), 64, 512),
    'r34': ((3, 4, 6, 3), 64, 512),
    'r50': ((3, 4, 14, 3), 64, 512),
    'r100': ((3, 13, 30, 3), 64, 512),
    'tiny': ((1, 1, 1, 1), 8, 64),
}

INPUT_SIZE = 112
CROP_MODES = ('crop_19_237', 'resize')


def _as_dtype(dtype: Any):
  return layers_lib.get_dtype(dtype)


class PReLU(nn.Module):
  """Per-channel PReLU (torch.nn.PReLU(C)): x if x >= 0 else a_c * x; a initialised to 0.25."""

  @nn.compact
  def __call__(self, x):
    slope = self.param('negative_slope', nn.initializers.constant(0.25), (x.shape[-1],),
                       jnp.float32)
    slope = slope.astype(x.dtype)
    return jnp.where(x >= 0, x, slope * x)


def _conv(features, kernel, strides, name, dtype):
  pad = (kernel - 1) // 2
  return cpu_conv.Conv(features, (kernel, kernel), strides=(strides, strides),
                       padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
                       param_dtype=jnp.float32, name=name)


class IBasicBlock(nn.Module):
  """bn1 -> conv1 3x3 -> bn2 -> prelu -> conv2 3x3 (stride) -> bn3, + shortcut.

  Attributes:
    features: output channels.
    strides: stride of conv2 (and of the 1x1 shortcut conv when `downsample`).
    downsample: whether the shortcut is a 1x1 conv + BN ("downsample_conv/_bn").
  """

  features: int
  strides: int = 1
  downsample: bool = False
  bn_eps: float = 1e-5
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool):
    def bn(name):
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=self.bn_eps,
                          dtype=self.dtype, param_dtype=jnp.float32, axis_name=self.axis_name,
                          use_fast_variance=False, name=name)

    y = bn('bn1')(x)
    y = _conv(self.features, 3, 1, 'conv1', self.dtype)(y)
    y = bn('bn2')(y)
    y = PReLU(name='prelu')(y)
    y = _conv(self.features, 3, self.strides, 'conv2', self.dtype)(y)
    y = bn('bn3')(y)
    if self.downsample:
      x = _conv(self.features, 1, self.strides, 'downsample_conv', self.dtype)(x)
      x = bn('downsample_bn')(x)
    return y + x


class IResNet(nn.Module):
  """arcface_torch IResNet.

  Attributes:
    layers: blocks per stage, e.g. (3, 4, 14, 3) for r50.
    width: stem / first-stage channels (64); stages are width * (1, 2, 4, 8).
    embedding_dim: size D of the embedding.
    bn_eps: epsilon of every BatchNorm.
    stem_stride: stride of the stem conv: 1 (arcface_torch) or 2 (every later map half the
      size: about half the compute of a narrow net, whose 112 x 112 maps dominate it).
    dtype: compute dtype ('float32' | 'bfloat16' or a jnp dtype); params are fp32.
    axis_name: mapped axis for cross-device BatchNorm statistics (inside shard_map).
  """

  layers: Sequence[int]
  width: int = 64
  embedding_dim: int = 512
  bn_eps: float = 1e-5
  stem_stride: int = 1
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Embeds aligned faces.

    Args:
      x: [B, 112, 112, 3] RGB in [-1, 1] ((pixel - 127.5) / 127.5).
      train: batch statistics (and running-average updates in 'batch_stats') if True.

    Returns:
      [B, D] float32 embeddings, not normalised.
    """
    if x.ndim != 4 or x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
      raise ValueError(f'IResNet expects [B, {INPUT_SIZE}, {INPUT_SIZE}, 3], got {x.shape}')
    dtype = _as_dtype(self.dtype)

    def bn(name, **kw):
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=self.bn_eps,
                          dtype=dtype, param_dtype=jnp.float32, axis_name=self.axis_name,
                          use_fast_variance=False, name=name, **kw)

    x = x.astype(dtype)
    if self.stem_stride not in (1, 2):
      raise ValueError(f'stem_stride must be 1 or 2, got {self.stem_stride}')
    x = _conv(self.width, 3, self.stem_stride, 'conv1', dtype)(x)
    x = bn('bn1')(x)
    x = PReLU(name='prelu')(x)
    for stage, blocks in enumerate(self.layers):
      features = self.width * 2**stage
      for i in range(blocks):
        x = IBasicBlock(features, strides=2 if i == 0 else 1, downsample=i == 0,
                        bn_eps=self.bn_eps, dtype=dtype, axis_name=self.axis_name,
                        name=f'layer{stage + 1}_{i}')(x, train)
    x = bn('bn2')(x)
    # arcface_torch flattens NCHW: channel-major order, so the fc kernel is fc.weight.T.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = nn.Dense(self.embedding_dim, dtype=dtype, param_dtype=jnp.float32, name='fc')(x)
    # BatchNorm1d whose weight arcface_torch freezes at 1.0: no scale parameter at all.
    x = bn('features', use_scale=False)(x)
    return x.astype(jnp.float32)


def iresnet(arch: str, **overrides) -> IResNet:
  """Builds an IResNet by name ('r18', 'r34', 'r50', 'r100', 'tiny').

  `overrides` may set any IResNet field (layers, width, embedding_dim, bn_eps, dtype,
  axis_name), e.g. `iresnet('r50', dtype='bfloat16')`.
  """
  if arch not in ARCHS:
    raise ValueError(f'unknown IResNet arch {arch!r}; known: {sorted(ARCHS)}')
  layers, width, dim = ARCHS[arch]
  kwargs = dict(layers=tuple(layers), width=width, embedding_dim=dim)
  kwargs.update(overrides)
  if 'dtype' in kwargs:
    kwargs['dtype'] = _as_dtype(kwargs['dtype'])
  return IResNet(**kwargs)


def arch_name(layers: Sequence[int], width: int, embedding_dim: int,
              stem_stride: int = 1) -> str:
  """The ARCHS name of a layout ('r50'), with a stride-2 stem and the embedding size when
  they differ ('tiny-s2-128d'), or 'custom'."""
  for name, (l, w, d) in ARCHS.items():
    if tuple(layers) == tuple(l) and width == w:
      name += '' if stem_stride == 1 else f'-s{stem_stride}'
      return name if embedding_dim == d else f'{name}-{embedding_dim}d'
  return 'custom'


def _bilinear_matrix(coords: np.ndarray, size: int) -> np.ndarray:
  """[len(coords), size] weights sampling a length-`size` axis at pixel-index `coords`."""
  coords = np.clip(coords, 0.0, size - 1.0)
  lo = np.clip(np.floor(coords).astype(np.int64), 0, max(size - 2, 0))
  frac = coords - lo
  m = np.zeros((len(coords), size), np.float64)
  rows = np.arange(len(coords))
  m[rows, lo] += 1.0 - frac
  m[rows, np.minimum(lo + 1, size - 1)] += frac
  return m.astype(np.float32)


def crop_coordinates(size: int, mode: str, out: int = INPUT_SIZE) -> np.ndarray:
  """Pixel-index sample positions (one axis) that `identity_crop` reads from a `size` image.

  'resize': linspace(0, size - 1, out) (bilinear, align_corners=True over the whole image).
  'crop_19_237': at size 256, rows/cols 19:237 resized with align_corners=True, i.e.
  linspace(19, 236, out); at other sizes the same positions mapped through the pixel-centre
  scaling x_S = (x_256 + 0.5) * S / 256 - 0.5 (so 128 and 512 images crop the same region).
  """
  if mode == 'resize':
    return np.linspace(0.0, size - 1.0, out)
  if mode == 'crop_19_237':
    c256 = np.linspace(19.0, 236.0, out)
    return (c256 + 0.5) * (size / 256.0) - 0.5
  raise ValueError(f'unknown identity crop mode {mode!r}; known: {CROP_MODES}')


def identity_crop(x: jax.Array, mode: str, out: int = INPUT_SIZE) -> jax.Array:
  """Maps aligned faces to the ArcFace input.

  Args:
    x: [B, S, S, C] images (any range; typically [-1, 1]).
    mode: 'crop_19_237' (5-point ArcFace alignment at 0.85 scale: rows/cols 19:237 of a 256
      image, scaled by S / 256, bilinearly resized with align_corners=True) or 'resize'
      (FFHQ-style alignment: the whole image resized with align_corners=True).
    out: output size (112).

  Returns:
    [B, out, out, C] in x's dtype; differentiable (two small matmuls).
  """
  if x.ndim != 4 or x.shape[1] != x.shape[2]:
    raise ValueError(f'identity_crop expects square [B, S, S, C] images, got {x.shape}')
  size = x.shape[1]
  if mode == 'resize':
    return layers_lib.resize_bilinear_align_corners(x, (out, out))
  m = jnp.asarray(_bilinear_matrix(crop_coordinates(size, mode, out), size))
  m = m.astype(jnp.promote_types(x.dtype, jnp.float32))
  y = jnp.einsum('ih,bhwc->biwc', m, x.astype(m.dtype), precision=jax.lax.Precision.HIGHEST)
  y = jnp.einsum('jw,biwc->bijc', m, y, precision=jax.lax.Precision.HIGHEST)
  return y.astype(x.dtype)
