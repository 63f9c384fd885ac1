"""A drop-in `conv_general_dilated` for Flax convolutions whose weight gradient is fast on CPU.

XLA:CPU computes a convolution's weight gradient as another convolution in which the
output gradient plays the kernel. For the discriminator's 4x4 stride-1 pad-2 convolutions
that "kernel" is the whole feature map (e.g. 9x9) and the Eigen convolution runs at
~2 GFLOP/s: measured on the 2-core dev CPU, 117 ms for the [4, 4, 64, 128] gradient of an
8 x 8 x 8 x 64 input, 3.3 ms as im2col + one matrix product (`_weight_grad_im2col`).

`conv_general_dilated` here has lax.conv_general_dilated's signature and result, with a
custom VJP for plain NHWC/HWIO convolutions (no dilation, no groups): the input gradient
and everything on GPU/TPU are JAX's own; on the CPU backend the weight gradient is
im2col + dot when the conv has >= IM2COL_MIN_FEATURES output features (XLA's own rule
below that). Other cases fall through to lax.conv_general_dilated. `cpu_conv.Conv` is
`nn.Conv` with it plugged in (`nn.Conv(..., conv_general_dilated=conv_general_dilated)`).

Every nn.Conv of the models uses it (ConvTranspose keeps JAX's rule); GPU/TPU programs
are unchanged. On the 2-core dev CPU it took the configs/synthetic.py step at batch 8 from
587-598 ms (load ~5) to 251-281 ms (idle), on par with PyTorch (docs/performance.md).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_DN = ('NHWC', 'HWIO', 'NHWC')

# im2col copies the input k*k times and pays that back only when the product is deep:
# with fewer output features XLA's own weight gradient is faster. Measured on the dev
# CPU (step medians): ArcFace synthetic config (batch 64, 8-64 channels at 112..7 px)
# 923 ms im2col everywhere, 715 ms never, 722 ms from 32 features, 658 ms from 64;
# configs/synthetic.py 267-340 ms everywhere, ~320 ms never, 250-280 ms from 32 or 64.
IM2COL_MIN_FEATURES = 64


def _varying_axes(x: jax.Array) -> set[str]:
  """Manual mesh axes (inside shard_map) over which x's value differs per device."""
  t = jax.typeof(x)
  axes = getattr(t, 'vma', None)
  if axes is None:
    axes = getattr(getattr(t, 'manual_axis_type', None), 'varying', ())
  return set(axes or ())


def _conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DN)


def _weight_grad_im2col(x: jax.Array, dy: jax.Array, kernel_hw: tuple[int, int],
                        strides: tuple[int, int], padding) -> jax.Array:
  """Weight gradient [kh, kw, Cin, Cout] of an NHWC/HWIO conv as im2col + one dot.

  Args:
    x: conv input [B, H, W, Cin].
    dy: gradient of the conv output [B, Ho, Wo, Cout].
    kernel_hw: (kh, kw).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)).
  """
  kh, kw = kernel_hw
  (top, bottom), (left, right) = padding
  sh, sw = strides
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  b, ho, wo = dy.shape[0], dy.shape[1], dy.shape[2]
  cols = jnp.stack([
      lax.slice(xp, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, xp.shape[3]),
                (1, sh, sw, 1))
      for i in range(kh) for j in range(kw)], axis=3)  # [B, Ho, Wo, kh * kw, Cin]
  dw = jnp.einsum('bhwkc,bhwo->kco', cols, dy, preferred_element_type=jnp.float32)
  return dw.reshape(kh, kw, x.shape[3], dy.shape[3])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_fast_grad(x, w, strides, padding):
  return _conv(x, w, strides, padding)


def _fwd(x, w, strides, padding):
  return _conv(x, w, strides, padding), (x, w)


def _bwd(strides, padding, residuals, dy):
  x, w = residuals
  # The conv is linear in each operand: transposing it gives JAX's own gradient rules
  # without tracing the forward conv again (jax.vjp would, as dead code that XLA drops but
  # that bench.jaxpr_flops would count).
  dx = jax.linear_transpose(lambda x_: _conv(x_, w, strides, padding), x)(dy)[0]
  if jax.default_backend() != 'cpu' or dy.shape[3] < IM2COL_MIN_FEATURES:
    dw = jax.linear_transpose(lambda w_: _conv(x, w_, strides, padding), w)(dy)[0]
    return dx, dw
  dw = _weight_grad_im2col(x, dy, w.shape[:2], strides, padding).astype(w.dtype)
  # Inside shard_map JAX's own rule sums an invariant (replicated) weight's gradient
  # over the devices it varies on (the transpose of the implicit pvary): do the same.
  extra = tuple(sorted(_varying_axes(dw) - _varying_axes(w)))
  if extra:
    dw = lax.psum(dw, extra)
  return dx, dw


_conv_fast_grad.defvjp(_fwd, _bwd)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Any, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> jax.Array:
  """lax.conv_general_dilated, with the CPU-friendly weight gradient for plain 2-D convs.

  Args and result as lax.conv_general_dilated (lhs [B, H, W, Cin], rhs [kh, kw, Cin, Cout]
  for the fast path, explicit padding pairs).
  """
  plain = (lhs.ndim == 4 and rhs.ndim == 4 and not isinstance(padding, str)
           and (lhs_dilation is None or tuple(lhs_dilation) == (1, 1))
           and (rhs_dilation is None or tuple(rhs_dilation) == (1, 1))
           and feature_group_count == 1 and batch_group_count == 1
           and precision is None and preferred_element_type is None
           and dimension_numbers is not None  # lax's default is NCHW
           and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DN))
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  return _conv_fast_grad(lhs, rhs, tuple(int(s) for s in window_strides),
                         tuple((int(a), int(b)) for a, b in padding))


# nn.Conv with the CPU-friendly weight gradient: what every convolution of the models uses.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
