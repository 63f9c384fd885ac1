"""fsjax.models.cpu_conv: the custom gradients equal JAX's own, also under shard_map."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from fsjax.bench import jaxpr_cost
from fsjax.train import parallel
from fsjax.models import cpu_conv


@pytest.mark.parametrize('kernel,stride,pad',
                         [(4, 1, 2), (4, 2, 1), (4, 2, 2), (3, 1, 1), (1, 1, 0), (3, 2, 1),
                          (1, 2, 0), (2, 3, 0), (5, 3, 3)])
def test_cpu_conv_gradients_match_lax(kernel, stride, pad, monkeypatch):
  monkeypatch.setattr(cpu_conv, 'IM2COL_MIN_FEATURES', 1)  # im2col for these small convs
  rs = np.random.RandomState(kernel * 10 + stride)
  x = jnp.asarray(rs.randn(2, 9, 8, 5), jnp.float32)
  w = jnp.asarray(rs.randn(kernel, kernel, 5, 3), jnp.float32)
  padding = ((pad, pad), (pad, pad))

  def loss(conv):
    return lambda x, w: jnp.sum(jnp.sin(conv(x, w, (stride, stride), padding,
                                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))))

  want = jax.grad(loss(jax.lax.conv_general_dilated), (0, 1))(x, w)
  got = jax.jit(jax.grad(loss(cpu_conv.conv_general_dilated), (0, 1)))(x, w)
  for a, b in zip(want, got):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)


def test_cpu_conv_in_shard_map_sums_weight_gradient_over_devices(monkeypatch):
  monkeypatch.setattr(cpu_conv, 'IM2COL_MIN_FEATURES', 1)
  mesh = parallel.make_mesh()
  n = mesh.devices.size
  x = np.random.RandomState(0).randn(2 * n, 8, 8, 4).astype(np.float32)
  plain = nn.Conv(6, (4, 4), padding=((2, 2), (2, 2)))
  fast = cpu_conv.Conv(6, (4, 4), padding=((2, 2), (2, 2)))
  params = plain.init(jax.random.PRNGKey(0), x[:1])

  def grads(module):
    def per_device(p, xb):
      g = jax.grad(lambda p: jax.lax.pmean(jnp.mean(module.apply(p, xb) ** 2), 'data'))(p)
      return g
    fn = parallel.data_parallel(per_device, mesh, in_specs=(P(), P('data')), out_specs=P())
    return fn(parallel.replicate(params, mesh), parallel.shard_batch({'x': x}, mesh)['x'])

  want, got = grads(plain), grads(fast)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4,
                                                       atol=1e-5), want, got)


def test_cpu_conv_uses_im2col_only_for_deep_outputs():
  """Below IM2COL_MIN_FEATURES the weight gradient is XLA's own convolution."""
  x = jnp.ones((2, 8, 8, 4), jnp.float32)

  def grad_jaxpr(features):
    w = jnp.ones((3, 3, 4, features), jnp.float32)
    f = lambda w: jnp.sum(cpu_conv.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
    return str(jax.make_jaxpr(jax.grad(f))(w))

  assert 'dot_general' not in grad_jaxpr(cpu_conv.IM2COL_MIN_FEATURES - 1)
  assert 'dot_general' in grad_jaxpr(cpu_conv.IM2COL_MIN_FEATURES)


@pytest.mark.parametrize('features', [3, 128])  # JAX's rule / im2col
def test_cpu_conv_backward_counts_like_lax(features):
  """jaxpr_cost.jaxpr_flops of a cpu_conv gradient equals lax's: no dead forward conv traced."""
  x = jnp.ones((2, 8, 8, 16), jnp.float32)
  w = jnp.ones((3, 3, 16, features), jnp.float32)

  def loss(conv):
    return lambda x, w: jnp.sum(conv(x, w, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC')))

  flops = [jaxpr_cost.jaxpr_flops(jax.make_jaxpr(jax.value_and_grad(loss(c), (0, 1)))(x, w))
           for c in (jax.lax.conv_general_dilated, cpu_conv.conv_general_dilated)]
  one_conv = 2.0 * 2 * 8 * 8 * features * 9 * 16
  assert flops[0] == pytest.approx(3 * one_conv)  # forward, input and weight gradients
  assert flops[1] == pytest.approx(flops[0])


@pytest.mark.parametrize('kernel,stride,pad', [(4, 2, 1), (3, 2, 1), (1, 2, 0), (5, 3, 2)])
@pytest.mark.parametrize('features', [3, 64])  # XLA's / im2col weight gradient
def test_conv_transpose_matches_lax(kernel, stride, pad, features):
  """Phase-split transposed conv and its gradients equal lax.conv_transpose's."""
  rs = np.random.RandomState(kernel + stride + features)
  x = jnp.asarray(rs.randn(2, 5, 4, features), jnp.float32)
  w = jnp.asarray(rs.randn(kernel, kernel, 6, features), jnp.float32)
  lax_pad = ((kernel - 1 - pad,) * 2,) * 2

  def loss(fn):
    return lambda x, w: jnp.sum(jnp.sin(fn(x, w)))

  ref = lambda x, w: jax.lax.conv_transpose(  # pylint: disable=g-long-lambda
      x, w, (stride, stride), lax_pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      transpose_kernel=True)
  ours = lambda x, w: cpu_conv.conv_transpose(x, w, (stride, stride), ((pad, pad), (pad, pad)))
  np.testing.assert_allclose(np.asarray(jax.jit(ours)(x, w)), np.asarray(ref(x, w)),
                             rtol=1e-4, atol=1e-4)
  want = jax.grad(loss(ref), (0, 1))(x, w)
  got = jax.jit(jax.grad(loss(ours), (0, 1)))(x, w)
  for a, b in zip(want, got):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)


def test_conv_transpose_module_matches_flax():
  """cpu_conv.ConvTranspose: nn.ConvTranspose(transpose_kernel=True)'s params and output."""
  x = jnp.asarray(np.random.RandomState(0).randn(2, 4, 4, 5), jnp.float32)
  plain = nn.ConvTranspose(3, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                           use_bias=False, transpose_kernel=True)
  ours = cpu_conv.ConvTranspose(3, (4, 4), (2, 2), ((1, 1), (1, 1)))
  params = plain.init(jax.random.PRNGKey(0), x)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params,
               ours.init(jax.random.PRNGKey(0), x))
  np.testing.assert_allclose(np.asarray(ours.apply(params, x)),
                             np.asarray(plain.apply(params, x)), rtol=1e-5, atol=1e-5)
