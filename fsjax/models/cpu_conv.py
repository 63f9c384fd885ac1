"""A drop-in `conv_general_dilated` for Flax convolutions whose gradients are fast on CPU.

XLA:CPU computes a convolution's weight gradient as another convolution in which the
output gradient plays the kernel. For the discriminator's 4x4 stride-1 pad-2 convolutions
that "kernel" is the whole feature map (e.g. 9x9) and the Eigen convolution runs at a few
GFLOP/s; im2col + one matrix product (`_weight_grad_im2col`) is ~35x faster there
(docs/performance.md, "Measurements behind code choices").

A strided transposed convolution is, in JAX, a convolution over its input dilated by the
stride, and so is its weight gradient; XLA:CPU computes both zeros included (4x the useful
work at stride 2).
`conv_transpose` / `ConvTranspose` compute it as one undilated convolution per output phase
(`_input_grad_phases`), with the strided convolution and its weight gradient as backward.

`conv_general_dilated` here has lax.conv_general_dilated's signature and result, with a
custom VJP for plain NHWC/HWIO convolutions (no dilation, no groups): everything on
GPU/TPU and the input gradient are JAX's own rule; on the CPU backend the weight gradient
is im2col + dot when the conv has >= IM2COL_MIN_FEATURES output features (XLA's own rule
below that). Other cases fall through to lax.conv_general_dilated. `cpu_conv.Conv` is
`nn.Conv` with it plugged in (`nn.Conv(..., conv_general_dilated=conv_general_dilated)`).

Every nn.Conv of the models uses it, and the attribute encoder's transposed convolutions use
`ConvTranspose` (the generator's 1x1 -> 2x2 stride-1 `id_proj` keeps nn.ConvTranspose);
GPU/TPU programs are unchanged (the CPU figures are in docs/performance.md).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_DN = ('NHWC', 'HWIO', 'NHWC')

# im2col copies the input k*k times and pays that back only when the product is deep: with
# fewer output features XLA's own weight gradient is faster (docs/performance.md: 64 is the
# fastest threshold for both CPU configs).
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


def _input_grad_phases(dy: jax.Array, w: jax.Array, x_hw: tuple[int, int],
                       strides: tuple[int, int], padding) -> jax.Array:
  """Input gradient [B, H, W, Cin] of a strided NHWC/HWIO conv without dilated convolutions.

  JAX's rule convolves the output gradient dilated by the stride (zeros between its pixels):
  XLA:CPU runs that at full cost, holes included (s_h * s_w times the useful work). Here each
  output phase (i + pad_lo) mod s is its own small undilated convolution of dy with the
  kernel taps of that phase, w[r_h::s_h, r_w::s_w] flipped; the phases are interleaved back.

  Args:
    dy: gradient of the conv output [B, Ho, Wo, Cout].
    w: kernel [kh, kw, Cin, Cout].
    x_hw: (H, W) of the conv input.
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)) of the forward conv.
  """
  b, cin = dy.shape[0], w.shape[2]
  sh, sw = strides
  # Padded input row j = q * s + r gets sum_m dy[q - m] * w[r + s m]: q in [0, Q).
  qh, qw = -(-(padding[0][0] + x_hw[0]) // sh), -(-(padding[1][0] + x_hw[1]) // sw)
  rows = []
  for rh in range(sh):
    cols = []
    for rw in range(sw):
      taps = w[rh::sh, rw::sw]  # [Mh, Mw, Cin, Cout]
      mh, mw = taps.shape[:2]
      if mh == 0 or mw == 0:
        cols.append(jnp.zeros((b, qh, qw, cin), dy.dtype))
        continue
      # Correlate dy (zero-extended: M - 1 before, up to Q after) with the flipped taps.
      ext = jnp.pad(dy, ((0, 0), (mh - 1, max(qh - dy.shape[1], 0)),
                         (mw - 1, max(qw - dy.shape[2], 0)), (0, 0)))
      ext = ext[:, :qh + mh - 1, :qw + mw - 1]
      kernel = jnp.transpose(taps[::-1, ::-1], (0, 1, 3, 2))  # [Mh, Mw, Cout, Cin]
      cols.append(lax.conv_general_dilated(ext, kernel, (1, 1), 'VALID',
                                           dimension_numbers=_DN))
    rows.append(jnp.stack(cols, axis=3))  # [B, Qh, Qw, sw, Cin]
  z = jnp.stack(rows, axis=2)  # [B, Qh, sh, Qw, sw, Cin]
  z = z.reshape(b, qh * sh, qw * sw, cin)
  top, left = padding[0][0], padding[1][0]
  return z[:, top:top + x_hw[0], left:left + x_hw[1]]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_fast_grad(x, w, strides, padding):
  return _conv(x, w, strides, padding)


def _fwd(x, w, strides, padding):
  return _conv(x, w, strides, padding), (x, w)


def _weight_grad(x, dy, w, strides, padding):
  """Weight gradient of _conv(x, w) for output gradient dy: im2col on CPU for deep outputs."""
  # The conv is linear in w: transposing it gives JAX's own rule without tracing the
  # forward conv again (jax.vjp would, as dead code that XLA drops but that
  # jaxpr_cost.jaxpr_flops would count).
  if jax.default_backend() != 'cpu' or dy.shape[3] < IM2COL_MIN_FEATURES:
    return jax.linear_transpose(lambda w_: _conv(x, w_, strides, padding), w)(dy)[0]
  dw = _weight_grad_im2col(x, dy, w.shape[:2], strides, padding).astype(w.dtype)
  # Inside shard_map JAX's own rule sums an invariant (replicated) weight's gradient
  # over the devices it varies on (the transpose of the implicit pvary): do the same.
  extra = tuple(sorted(_varying_axes(dw) - _varying_axes(w)))
  if extra:
    dw = lax.psum(dw, extra)
  return dw


def _bwd(strides, padding, residuals, dy):
  x, w = residuals
  dx = jax.linear_transpose(lambda x_: _conv(x_, w, strides, padding), x)(dy)[0]
  return dx, _weight_grad(x, dy, w, strides, padding)


_conv_fast_grad.defvjp(_fwd, _bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_transpose_phases(x, w, strides, padding, out_hw):
  return _input_grad_phases(x, w, out_hw, strides, padding)


def _t_fwd(x, w, strides, padding, out_hw):
  return _input_grad_phases(x, w, out_hw, strides, padding), (x, w)


def _t_bwd(strides, padding, out_hw, residuals, g):
  # y = (the input gradient of conv(., w)) applied to x, bilinear: <g, y> = <conv(g, w), x>.
  x, w = residuals
  del out_hw
  return _conv(g, w, strides, padding).astype(x.dtype), _weight_grad(g, x, w, strides, padding)


_conv_transpose_phases.defvjp(_t_fwd, _t_bwd)


def conv_transpose(x: jax.Array, w: jax.Array, strides: tuple[int, int],
                   padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """Transposed convolution: the input gradient of the conv (strides, padding, w) applied to x.

  Equals lax.conv_transpose(x, w, strides, ((kh-1-top, kh-1-bottom), ...),
  transpose_kernel=True) (PyTorch's ConvTranspose2d(stride, padding) with w the layout of
  nn.ConvTranspose(transpose_kernel=True)). On the CPU backend the forward pass is phase-split
  (`_input_grad_phases`) instead of a convolution over the stride-dilated input, and the
  backward is the strided conv and its (im2col) weight gradient; elsewhere lax's.

  Args:
    x: [B, H, W, C'] with C' = w's output features.
    w: [kh, kw, C, C'] (the kernel of the strided conv C -> C' being transposed).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)) of that strided conv.

  Returns:
    [B, (H - 1) * sh - top - bottom + kh, (W - 1) * sw - left - right + kw, C].
  """
  (kh, kw), (sh, sw) = w.shape[:2], strides
  out_hw = ((x.shape[1] - 1) * sh - sum(padding[0]) + kh,
            (x.shape[2] - 1) * sw - sum(padding[1]) + kw)
  if jax.default_backend() != 'cpu':
    lax_padding = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip((kh, kw), padding))
    return lax.conv_transpose(x, w, strides, lax_padding, dimension_numbers=_DN,
                              transpose_kernel=True)
  return _conv_transpose_phases(x, w, tuple(strides), tuple(tuple(p) for p in padding),
                                out_hw)


class ConvTranspose(nn.Module):
  """PyTorch-style ConvTranspose2d(kernel, stride, padding), no bias, NHWC; kernel param laid
  out as nn.ConvTranspose(transpose_kernel=True): [kh, kw, features, in_features]."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int]
  padding: tuple[tuple[int, int], tuple[int, int]]  # the torch padding of each side
  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, Cin] -> [B, (H - 1) * s - pads + k, ..., features] in `dtype`."""
    kernel = self.param('kernel', self.kernel_init,
                        tuple(self.kernel_size) + (self.features, x.shape[-1]), jnp.float32)
    return conv_transpose(x.astype(self.dtype), kernel.astype(self.dtype), self.strides,
                          self.padding)


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
