"""Small layers shared by the fsjax models (NHWC), with PyTorch-parity semantics.

PyTorch parity notes: bilinear resizing uses align_corners=True sampling (not the
half-pixel centres of jax.image.resize); instance norm has no affine parameters and
eps 1e-5; average pooling excludes the padding from the mean (count_include_pad=False).
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Dtype = Any

_DTYPES = {
    'float32': jnp.float32,
    'fp32': jnp.float32,
    'bfloat16': jnp.bfloat16,
    'bf16': jnp.bfloat16,
    'float16': jnp.float16,
    'fp16': jnp.float16,
}

# Initialisers (taotaonice/FaceShifter `weight_init`): xavier-normal convolutions,
# N(0, 0.001) dense kernels with zero bias.
conv_init = nn.initializers.xavier_normal()
dense_init = nn.initializers.normal(stddev=0.001)


def get_dtype(name: str | Dtype) -> Dtype:
  """Returns the jnp dtype for a config name ('float32' | 'bfloat16' | 'float16').

  A dtype (jnp.float32, np.dtype(...)) is passed through unchanged.
  """
  if isinstance(name, str):
    try:
      return _DTYPES[name.lower()]
    except KeyError:
      raise ValueError(f'unknown dtype {name!r}; expected one of {sorted(_DTYPES)}') from None
  return jnp.dtype(name).type


def _align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] float64 matrix of 1-D linear interpolation with align_corners=True."""
  m = np.zeros((n_out, n_in), np.float64)
  if n_out == 1 or n_in == 1:
    m[:, 0] = 1.0  # PyTorch samples index 0 when the output (or input) has one pixel.
    return m
  src = np.arange(n_out, dtype=np.float64) * ((n_in - 1) / (n_out - 1))
  i0 = np.clip(np.floor(src).astype(np.int64), 0, n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  frac = src - i0
  rows = np.arange(n_out)
  np.add.at(m, (rows, i0), 1.0 - frac)
  np.add.at(m, (rows, i1), frac)
  return m


def _row_taps(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The non-zeros of each row of m [n_out, n_in]: (indices [n_out, K] int32, weights
  [n_out, K] float64), K = the most non-zeros in a row, short rows padded with weight 0."""
  k = max(1, int((m != 0).sum(axis=1).max()))
  idx = np.zeros((m.shape[0], k), np.int32)
  w = np.zeros((m.shape[0], k), np.float64)
  for r, row in enumerate(m):
    nz = np.flatnonzero(row)
    idx[r, :len(nz)] = nz
    w[r, :len(nz)] = row[nz]
  return idx, w


def _apply_along(x: jax.Array, m: np.ndarray, axis: int) -> jax.Array:
  """Applies the sparse matrix m [n_out, n_in] along `axis` of x as K gathers (taps).

  Equals tensordot(m, x) moved back to `axis`, but each output reads only the K inputs its
  row weights: memory-bound work that XLA fuses, instead of a dense matmul and transposes.
  """
  idx, w = _row_taps(m)
  shape = [1] * x.ndim
  shape[axis] = m.shape[0]
  out = None
  for k in range(idx.shape[1]):
    term = jnp.take(x, idx[:, k], axis=axis, mode='clip') * jnp.asarray(
        w[:, k].reshape(shape), x.dtype)
    out = term if out is None else out + term
  return out


def _separable(x: jax.Array, mh: np.ndarray, mw: np.ndarray) -> jax.Array:
  """mh [H_out, H_in] along H and mw [W_out, W_in] along W of x [B, H, W, C], in float32
  (or wider), returned in x.dtype."""
  compute = jnp.promote_types(x.dtype, jnp.float32)
  y = _apply_along(x.astype(compute), mh, 1)
  return _apply_along(y, mw, 2).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _resize_separable(x: jax.Array, sizes: tuple[int, int, int, int]) -> jax.Array:
  h_in, w_in, h_out, w_out = sizes
  return _separable(x, _align_corners_matrix(h_in, h_out), _align_corners_matrix(w_in, w_out))


def _resize_fwd(x, sizes):
  return _resize_separable(x, sizes), None


def _resize_bwd(sizes, _, g):
  # The resize is linear: its transpose applies the transposed matrices (again as taps),
  # which avoids the scatter-adds that differentiating the gathers would make.
  h_in, w_in, h_out, w_out = sizes
  return (_separable(g, _align_corners_matrix(h_in, h_out).T,
                     _align_corners_matrix(w_in, w_out).T),)


_resize_separable.defvjp(_resize_fwd, _resize_bwd)


def _double_along(x: jax.Array, axis: int) -> jax.Array:
  """Bilinear x2 with align_corners=True along `axis` (size n -> 2n), as shifts, no gathers.

  With d = 2n - 1, output 2k samples (k - 1) + (1 - k/d) and output 2k + 1 samples
  k + (n - 1 - k)/d, so
    out[2k]     = (1 - k/d) x[k] + (k/d) x[k - 1]
    out[2k + 1] = (1 - (n - 1 - k)/d) x[k] + ((n - 1 - k)/d) x[k + 1]
  (the clamped neighbour at either end gets weight 0). Elementwise work on shifted copies,
  interleaved by a reshape: XLA fuses it, and its gradient, into loops without the
  gathers and layout transposes of the general resize.
  """
  n = x.shape[axis]
  shape = [1] * x.ndim
  shape[axis] = n
  k = np.arange(n, dtype=np.float64)
  d = 2 * n - 1
  w_prev = jnp.asarray((k / d).reshape(shape), x.dtype)
  w_next = jnp.asarray(((n - 1 - k) / d).reshape(shape), x.dtype)
  # x[k - 1] and x[k + 1], the ends repeated (their weight is 0 there). Two concatenations:
  # jnp.pad(mode='edge') computes the same ~3x slower on XLA:CPU (docs/performance.md).
  first, last = lax.slice_in_dim(x, 0, 1, axis=axis), lax.slice_in_dim(x, n - 1, n, axis=axis)
  prev = jnp.concatenate([first, lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
  nxt = jnp.concatenate([lax.slice_in_dim(x, 1, n, axis=axis), last], axis=axis)
  even = x + w_prev * (prev - x)
  odd = x + w_next * (nxt - x)
  out = jnp.stack([even, odd], axis=axis + 1)
  return out.reshape(x.shape[:axis] + (2 * n,) + x.shape[axis + 1:])


def resize_bilinear_align_corners(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """Bilinear resize with PyTorch `F.interpolate(mode='bilinear', align_corners=True)` semantics.

  Works for up- and down-sampling (no antialiasing, as in PyTorch) and keeps the dtype.
  Computed in float32: exact doubling (the decoders' x2) as shifted elementwise sums
  (`_double_along`); other sizes as per-axis 2-tap gathers with a hand-written gradient,
  not as interpolation-matrix products (float32 at HIGHEST precision plus layout transposes
  on GPUs; gathers cost XLA:CPU a layout transpose each; docs/performance.md).

  Args:
    x: [B, H, W, C] array, any float dtype.
    size: (H_out, W_out).

  Returns:
    [B, H_out, W_out, C] array of x.dtype.
  """
  h_out, w_out = int(size[0]), int(size[1])
  _, h_in, w_in, _ = x.shape
  if (h_in, w_in) == (h_out, w_out):
    return x
  if (h_out, w_out) == (2 * h_in, 2 * w_in):
    compute = jnp.promote_types(x.dtype, jnp.float32)
    return _double_along(_double_along(x.astype(compute), 1), 2).astype(x.dtype)
  return _resize_separable(x, (int(h_in), int(w_in), h_out, w_out))


def upsample2x(x: jax.Array) -> jax.Array:
  """Bilinear x2 (align_corners=True) of a [B, H, W, C] map -> [B, 2H, 2W, C]."""
  return resize_bilinear_align_corners(x, (2 * x.shape[1], 2 * x.shape[2]))


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Instance norm without affine parameters (PyTorch InstanceNorm2d(affine=False)).

  Statistics are taken per sample and channel over H, W (biased variance), in float32.

  Args:
    x: [B, H, W, C].
    eps: added to the variance.

  Returns:
    [B, H, W, C] normalised, in x.dtype.
  """
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  # One pass for both moments (XLA fuses the two sums into one read of x), taken about
  # each map's first pixel so that E[d^2] - E[d]^2 does not cancel when |mean| >> std.
  # The result does not depend on the shift, hence stop_gradient.
  d = xf - jax.lax.stop_gradient(xf[:, :1, :1, :])
  mean_d = jnp.mean(d, axis=(1, 2), keepdims=True)
  var = jnp.maximum(jnp.mean(jnp.square(d), axis=(1, 2), keepdims=True) - jnp.square(mean_d),
                    0.0)
  return ((d - mean_d) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def avg_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """AvgPool 3x3, stride 2, pad 1, padding not counted (pix2pixHD downsampling).

  Args:
    x: [B, H, W, C].

  Returns:
    [B, floor((H - 1) / 2) + 1, floor((W - 1) / 2) + 1, C].
  """
  return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def batch_norm(train: bool, axis_name: str | None, dtype: Dtype, name: str,
               scale_init=nn.initializers.ones) -> nn.BatchNorm:
  """BatchNorm with PyTorch defaults (momentum 0.1 -> Flax 0.9, eps 1e-5).

  Train mode normalises with the batch statistics (averaged over `axis_name` when set,
  e.g. 'data' inside shard_map) and updates 'batch_stats'; eval mode uses the running
  averages. Note: Flax keeps the biased batch variance in the running average where
  PyTorch keeps the unbiased one (a factor n / (n - 1), n = B * H * W).
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      axis_name=axis_name, dtype=dtype, use_fast_variance=False,
                      scale_init=scale_init, name=name)
