"""Tests of fsjax.models.hear_net: PyTorch parity (eval, train, train-mode gradients),
parameter count, shapes.

The PyTorch reference is fsjax/bench/torch_reference/hear_net.py. Parity runs at tiny widths
and 64 px (2x2 bottleneck, so train-mode BatchNorm has more than the batch to average over).
"""

import copy

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from fsjax.models import hear_net
from fsjax.bench.torch_reference import hear_net as t_hear
from fsjax.bench.torch_reference import convert as torch_convert

TOL = 1e-4  # max |flax - torch| <= TOL * max(1, max |torch|), float32
TINY_CHANNELS = (4, 8, 8, 16, 16)  # the paper's depth (5 levels), tiny widths
PAPER_PARAMS = 16_663_043  # counted from the public PyTorch build at 256 px


@pytest.fixture(autouse=True, scope='module')
def _fast_compiles():
  """Compile without most XLA optimisations (compile time dominates on a CPU)."""
  previous = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


def _nparams(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _hear_config(**overrides):
  """A config.hear with every field from_config reads: the paper's network, tiny widths."""
  return ml_collections.ConfigDict(dict(
      {'channels': TINY_CHANNELS, 'full_res_channels': 0, 'target_input': False,
       'blend_mask': False, 'mask_channels': (), 'keep_swap': False, 'mask_threshold': 0.0},
      **overrides))


def _nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def _max_err(got, ref):
  got = np.asarray(got, np.float32)
  assert got.shape == ref.shape, (got.shape, ref.shape)
  return float(np.max(np.abs(got - ref))), max(1.0, float(np.max(np.abs(ref))))


_randomize_bn = torch_convert.randomize_batch_norm


def _bn_counts(channels, size, batch):
  """Values per channel that each BatchNorm averages over: {name: B * h * w}."""
  n = len(channels)
  counts = {f'down{i}_bn': batch * (size // 2 ** (i + 1)) ** 2 for i in range(n)}
  counts.update({f'up{j}_bn': batch * (size // 2 ** (n - 1 - j)) ** 2 for j in range(n - 1)})
  return counts


def test_parity_with_torch_eval_and_train():
  """Flax == torch to 1e-4: eval mode (randomised running stats), train mode (batch stats),
  and the train-mode running-average updates (variances up to torch's n / (n - 1))."""
  torch.manual_seed(0)
  size, batch = 64, 2
  t_model = _randomize_bn(t_hear.init_weights(t_hear.HEARNet(TINY_CHANNELS)))
  # Y_hat_st in [-1, 1] and dY_t in [-2, 2], as in training.
  x = torch.cat([torch.rand(batch, 3, size, size) * 2 - 1,
                 torch.rand(batch, 3, size, size) * 4 - 2], dim=1)
  f_model = hear_net.HEARNet(channels=TINY_CHANNELS)
  j_x = jnp.asarray(_nhwc(x))
  converted = t_hear.hear_net_to_flax(t_model)
  abstract = jax.eval_shape(f_model.init, jax.random.key(0), j_x)
  shapes = lambda t: jax.tree.map(lambda a: tuple(a.shape), t)
  assert shapes(converted) == shapes(dict(abstract))
  variables = jax.tree.map(jnp.asarray, converted)

  @jax.jit
  def run(v, x):
    return f_model.apply(v, x, False), f_model.apply(v, x, True, mutable=['batch_stats'])

  y_eval, (y_train, updates) = run(variables, j_x)
  t_model.eval()
  with torch.no_grad():
    ref_eval = _nhwc(t_model(x))
  t_model.train()
  with torch.no_grad():
    ref_train = _nhwc(t_model(x))
  assert y_eval.dtype == jnp.float32
  errors = {}
  for mode, got, ref in (('eval', y_eval, ref_eval), ('train', y_train, ref_train)):
    err, scale = _max_err(got, ref)
    errors[mode] = err
    assert err <= TOL * scale, f'{mode}: max abs err {err:.3g} (scale {scale:.3g})'
  # The check has teeth: the two modes give different outputs.
  assert np.max(np.abs(ref_eval - ref_train)) > 1e-2
  print('HEAR-Net parity max abs err:', {k: f'{v:.2e}' for k, v in errors.items()})

  new_stats = t_hear.hear_net_to_flax(t_model)['batch_stats']
  old_stats = converted['batch_stats']
  counts = _bn_counts(TINY_CHANNELS, size, batch)
  assert set(updates['batch_stats']) == set(new_stats) == set(counts)
  for name, n in counts.items():
    got = updates['batch_stats'][name]
    np.testing.assert_allclose(got['mean'], new_stats[name]['mean'], atol=1e-5, rtol=1e-4,
                               err_msg=name)
    # torch keeps the unbiased batch variance in the running average, Flax the biased one.
    v0 = old_stats[name]['var']
    np.testing.assert_allclose((np.asarray(got['var']) - 0.9 * v0) * n / (n - 1),
                               new_stats[name]['var'] - 0.9 * v0, atol=1e-5, rtol=1e-4,
                               err_msg=name)


def test_param_count_and_shapes_at_256():
  """Paper widths at 256 px (abstract evaluation only): 16,663,043 params == torch, the
  layer shapes of the design notes, output [B, 256, 256, 3] float32 (also in bf16)."""
  x = jax.ShapeDtypeStruct((2, 256, 256, 6), jnp.float32)
  config = _hear_config(channels=t_hear.PAPER_CHANNELS)
  model = hear_net.from_config(config)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert _nparams(variables['params']) == PAPER_PARAMS
  with torch.device('meta'):
    assert t_hear.count_params(t_hear.HEARNet()) == PAPER_PARAMS
  p = variables['params']
  assert [p[f'down{i}_conv']['kernel'].shape for i in range(5)] == [
      (4, 4, 6, 64), (4, 4, 64, 128), (4, 4, 128, 256), (4, 4, 256, 512), (4, 4, 512, 512)]
  # Transposed-conv kernels [kh, kw, out, in]: 512->512, 1024->256, 512->128, 256->64.
  assert [p[f'up{j}_conv']['kernel'].shape for j in range(4)] == [
      (4, 4, 512, 512), (4, 4, 256, 1024), (4, 4, 128, 512), (4, 4, 64, 256)]
  assert p['out_conv']['kernel'].shape == (3, 3, 128, 3)
  assert set(variables['batch_stats']) == {f'down{i}_bn' for i in range(5)} | {
      f'up{j}_bn' for j in range(4)}

  y = jax.eval_shape(lambda v, a: model.apply(v, a, False), variables, x)
  assert y.shape == (2, 256, 256, 3) and y.dtype == jnp.float32
  y, updates = jax.eval_shape(lambda v, a: model.apply(v, a, True, mutable=['batch_stats']),
                              variables, x)
  assert y.shape == (2, 256, 256, 3)
  assert jax.tree.map(lambda a: a.shape, updates['batch_stats']) == jax.tree.map(
      lambda a: a.shape, variables['batch_stats'])

  bf16 = hear_net.from_config(config, axis_name='data', dtype='bfloat16')
  assert (bf16.dtype, bf16.axis_name, tuple(bf16.channels)) == (
      'bfloat16', 'data', t_hear.PAPER_CHANNELS)
  y16 = jax.eval_shape(lambda v, a: bf16.apply(v, a, False), variables, x)
  assert y16.shape == (2, 256, 256, 3) and y16.dtype == jnp.float32

  # The input helper, and a size the U-Net cannot take.
  a = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
  assert jax.eval_shape(hear_net.hear_input, a, a).shape == (2, 256, 256, 6)
  with pytest.raises(ValueError, match='divisible by 32'):
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 48, 48, 6),
                                                                       jnp.float32))


def test_train_mode_gradients_match_torch():
  """d/d(input) and d/d(params) of <y, g> in train mode == torch autograd (3 levels, 16 px):
  the CPU conv / transposed-conv VJPs of fsjax.models.cpu_conv plus the biases and BN."""
  torch.manual_seed(1)
  channels, size = (4, 8, 8), 16
  t_model = _randomize_bn(t_hear.init_weights(t_hear.HEARNet(channels)), seed=1).train()
  x = (torch.rand(2, 6, size, size) * 2 - 1).requires_grad_()
  g = torch.randn(2, 3, size, size)
  (t_model(x) * g).sum().backward()
  f_model = hear_net.HEARNet(channels=channels)
  variables = jax.tree.map(jnp.asarray, t_hear.hear_net_to_flax(t_model))

  def loss(params, x):
    y, _ = f_model.apply({**variables, 'params': params}, x, True, mutable=['batch_stats'])
    return jnp.sum(y * jnp.asarray(_nhwc(g)))

  gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables['params'],
                                                   jnp.asarray(_nhwc(x)))
  err, scale = _max_err(gx, _nhwc(x.grad))
  assert err <= TOL * scale, f'input grad: {err:.3g} (scale {scale:.3g})'
  grads = copy.deepcopy(t_model)  # the converter applied to the gradients
  with torch.no_grad():
    for p, q in zip(grads.parameters(), t_model.parameters()):
      p.copy_(q.grad)
  ref = t_hear.hear_net_to_flax(grads)['params']
  worst = err / scale
  for path, a in jax.tree_util.tree_flatten_with_path(gp)[0]:
    b = ref
    for key in path:
      b = b[key.key]
    err, scale = _max_err(a, b)
    worst = max(worst, err / scale)
    assert err <= TOL * scale, f'{jax.tree_util.keystr(path)}: {err:.3g} (scale {scale:.3g})'
  print(f'HEAR-Net gradient parity: worst max err / max(1, max |ref|) {worst:.2e}')



def test_full_resolution_path_option():
  """hear.full_res_channels (fsjax option): one Conv 3x3 of the input concatenated before the
  output conv, exactly its parameters more; it lets an output pixel follow its own input
  pixel (a one-pixel change of dY_t moves that output pixel through this path alone)."""
  x = jax.ShapeDtypeStruct((1, 32, 32, 6), jnp.float32)
  plain = hear_net.HEARNet(channels=TINY_CHANNELS)
  wide = hear_net.from_config(_hear_config(full_res_channels=5))
  v_plain = jax.eval_shape(plain.init, jax.random.key(0), x)
  v_wide = jax.eval_shape(wide.init, jax.random.key(0), x)
  assert _nparams(v_wide['params']) - _nparams(v_plain['params']) == (
      3 * 3 * 6 * 5 + 5) + 3 * 3 * 5 * 3
  assert v_wide['params']['full_res_conv']['kernel'].shape == (3, 3, 6, 5)
  variables = wide.init(jax.random.key(0), jnp.zeros(x.shape))
  # With the out conv's weights on the U-Net channels zeroed, an output pixel is a function
  # of the 5 x 5 input pixels around it alone (two 3x3 convs at full resolution).
  kernel = variables['params']['out_conv']['kernel']
  unet_channels = kernel.shape[2] - 5
  variables['params']['out_conv']['kernel'] = kernel.at[:, :, :unet_channels].set(0.0)
  inputs = jax.random.normal(jax.random.key(1), x.shape)
  grad = jax.grad(lambda a: wide.apply(variables, a)[0, 16, 16, 0])(inputs)
  support = np.argwhere(np.abs(np.asarray(grad[0])).sum(axis=-1) > 0)
  assert len(support) and support.min(axis=0).tolist() == [14, 14]
  assert support.max(axis=0).tolist() == [18, 18]


def test_target_input_option():
  """hear.target_input (fsjax option): X_t joins the input as channels 7-9; only the first
  conv grows, and the refinement then depends on X_t itself."""
  net = hear_net.from_config(_hear_config(target_input=True))
  plain = hear_net.HEARNet(channels=TINY_CHANNELS)
  assert net.input_channels == 9 and plain.input_channels == 6
  maps = [jax.random.normal(jax.random.key(i), (1, 32, 32, 3)) for i in range(3)]
  y_hat, error, x_t = maps
  x = hear_net.input_of(net, y_hat, error, x_t)
  assert x.shape == (1, 32, 32, 9)
  np.testing.assert_array_equal(x[..., 6:], x_t)
  assert hear_net.input_of(plain, y_hat, error, x_t).shape == (1, 32, 32, 6)
  variables = net.init(jax.random.key(0), x)
  v_plain = jax.eval_shape(plain.init, jax.random.key(0), jnp.zeros((1, 32, 32, 6)))
  assert variables['params']['down0_conv']['kernel'].shape == (4, 4, 9, TINY_CHANNELS[0])
  assert _nparams(variables['params']) - _nparams(v_plain['params']) == 4 * 4 * 3 * 4
  other = hear_net.input_of(net, y_hat, error, -x_t)
  assert not np.allclose(net.apply(variables, x), net.apply(variables, other))
  with pytest.raises(ValueError, match=r'expected \[B, S, S, 9\]'):
    net.apply(variables, x[..., :6])
  # Exports before the option read as the paper's 6-channel network.
  from fsjax.swap import export  # pylint: disable=g-import-not-at-top
  meta = {'image_size': 32, 'hear': {'channels': list(TINY_CHANNELS)}}
  assert not export.build_hear(meta).target_input
  meta['hear']['target_input'] = True
  shapes = export.abstract_hear(meta)
  assert shapes['params']['down0_conv']['kernel'].shape == (4, 4, 9, TINY_CHANNELS[0])


def test_blend_mask_option():
  """hear.blend_mask (fsjax option): the output conv gives a 4th (mask) channel and
  Y = m * X_t + (1 - m) * tanh(rgb); with the mask's bias far up Y is X_t, far down it is
  the 3-channel network with the same weights; exports carry the option."""
  config = _hear_config(full_res_channels=4, blend_mask=True)
  net = hear_net.from_config(config)
  plain = hear_net.from_config(ml_collections.ConfigDict(
      dict(config.to_dict(), blend_mask=False, target_input=True)))
  assert net.input_channels == 9
  y_hat, error, x_t = [jax.random.uniform(jax.random.key(i), (2, 32, 32, 3), minval=-1.0)
                       for i in range(3)]
  x = hear_net.input_of(net, y_hat, error, x_t)
  variables = net.init(jax.random.key(0), x)
  out = variables['params']['out_conv']
  assert out['kernel'].shape[-1] == 4 and out['bias'].shape == (4,)
  assert _nparams(variables['params']) - _nparams(
      jax.eval_shape(plain.init, jax.random.key(0), x)['params']) == out['kernel'][..., 3].size + 1
  y, m = net.apply(variables, x, return_mask=True)
  assert y.shape == (2, 32, 32, 3) and m.shape == (2, 32, 32)
  assert float(m.min()) > 0.0 and float(m.max()) < 1.0
  np.testing.assert_allclose(net.apply(variables, x), y)

  def with_mask_bias(b):
    v = jax.tree.map(lambda a: a, variables)
    v['params']['out_conv']['bias'] = out['bias'].at[3].set(b)
    return v

  np.testing.assert_allclose(net.apply(with_mask_bias(60.0), x), x_t, atol=1e-6)
  three = jax.tree.map(lambda a: a, variables)
  three['params']['out_conv'] = {'kernel': out['kernel'][..., :3], 'bias': out['bias'][:3]}
  np.testing.assert_allclose(net.apply(with_mask_bias(-60.0), x), plain.apply(three, x),
                             atol=1e-6)
  with pytest.raises(ValueError, match='return_mask needs'):
    plain.apply(three, x, return_mask=True)
  from fsjax.swap import export  # pylint: disable=g-import-not-at-top
  meta = {'image_size': 32, 'hear': {'channels': list(TINY_CHANNELS), 'blend_mask': True,
                                     'full_res_channels': 4}}
  assert export.build_hear(meta).blend_mask
  assert export.abstract_hear(meta)['params']['out_conv']['kernel'].shape[-1] == 4


def test_mask_branch_option():
  """hear.mask_channels (fsjax option, with blend_mask): a second U-Net ('mask_' layers) gives
  m from concat(dY_t, X_t) alone, and the paper's 6-channel U-Net gives Y' from
  concat(Y_hat, dY_t) alone, so Y' cannot copy X_t; exports carry the option."""
  config = _hear_config(full_res_channels=4, blend_mask=True, mask_channels=(2, 4, 4))
  net = hear_net.from_config(config)
  paper = hear_net.from_config(ml_collections.ConfigDict(
      dict(config.to_dict(), blend_mask=False, mask_channels=())))
  assert net.input_channels == 9
  y_hat, error, x_t = [jax.random.uniform(jax.random.key(i), (2, 32, 32, 3), minval=-1.0)
                       for i in range(3)]
  x = hear_net.input_of(net, y_hat, error, x_t)
  variables = net.init(jax.random.key(0), x)
  p = variables['params']
  image = {k: v for k, v in p.items() if not k.startswith('mask_')}
  mask = {k: v for k, v in p.items() if k.startswith('mask_')}
  assert image['down0_conv']['kernel'].shape == (4, 4, 6, TINY_CHANNELS[0])
  assert image['out_conv']['kernel'].shape[-1] == 3
  assert mask['mask_down0_conv']['kernel'].shape == (4, 4, 6, 2)
  assert mask['mask_out_conv']['kernel'].shape[-1] == 1 and 'mask_full_res_conv' in mask
  # The image U-Net is the paper's network, parameter for parameter.
  paper_shapes = jax.eval_shape(paper.init, jax.random.key(0), x[..., :6])['params']
  assert jax.tree.map(jnp.shape, paper_shapes) == jax.tree.map(jnp.shape, image)
  stats = {k: v for k, v in variables['batch_stats'].items() if not k.startswith('mask_')}
  y_prime = paper.apply({'params': image, 'batch_stats': stats}, x[..., :6])
  y, m = net.apply(variables, x, return_mask=True)
  assert y.shape == (2, 32, 32, 3) and m.shape == (2, 32, 32)
  np.testing.assert_allclose(y, m[..., None] * x_t + (1 - m[..., None]) * y_prime, atol=1e-5)

  # m reads dY_t and X_t, never Y_hat; Y' never reads X_t.
  _, m_other = net.apply(variables, hear_net.input_of(net, -y_hat, error, x_t),
                         return_mask=True)
  np.testing.assert_array_equal(m_other, m)
  _, m_moved = net.apply(variables, hear_net.input_of(net, y_hat, error, -x_t),
                         return_mask=True)
  assert not np.allclose(m_moved, m)

  def with_mask_bias(b):
    v = jax.tree.map(lambda a: a, variables)
    v['params']['mask_out_conv']['bias'] = jnp.full((1,), b)
    return v

  far_down = with_mask_bias(-60.0)
  np.testing.assert_allclose(net.apply(far_down, x), y_prime, atol=1e-6)
  np.testing.assert_allclose(net.apply(far_down, hear_net.input_of(net, y_hat, error, -x_t)),
                             y_prime, atol=1e-6)
  np.testing.assert_allclose(net.apply(with_mask_bias(60.0), x), x_t, atol=1e-6)
  with pytest.raises(ValueError, match='needs blend_mask'):
    hear_net.HEARNet(channels=TINY_CHANNELS, mask_channels=(2, 4)).init(
        jax.random.key(0), x[..., :6])
  with pytest.raises(ValueError, match='divisible by 16'):
    hear_net.HEARNet(channels=(2, 4), blend_mask=True, mask_channels=(2, 2, 2, 2)).init(
        jax.random.key(0), x[:, :8, :8])
  from fsjax.swap import export  # pylint: disable=g-import-not-at-top
  meta = {'image_size': 32, 'hear': dict(config.to_dict(), channels=list(TINY_CHANNELS),
                                         mask_channels=[2, 4, 4])}
  assert export.build_hear(meta).mask_channels == (2, 4, 4)
  shapes = export.abstract_hear(meta)
  assert jax.tree.map(jnp.shape, shapes['params']) == jax.tree.map(jnp.shape, p)
  del meta['hear']['mask_channels']  # exports before the option: one U-Net gives m
  assert export.build_hear(meta).mask_channels == ()


def test_keep_swap_and_mask_threshold_options():
  """hear.keep_swap (with mask_channels): no image U-Net, Y = m * X_t + (1 - m) * Y_hat;
  hear.mask_threshold t: at inference m is (m > t), in training the soft m; exports carry
  both (older exports: False / 0)."""
  config = _hear_config(full_res_channels=4, blend_mask=True, mask_channels=(2, 4, 4),
                        keep_swap=True)
  net = hear_net.from_config(config)
  hard = hear_net.from_config(ml_collections.ConfigDict(dict(config.to_dict(),
                                                             mask_threshold=0.5)))
  y_hat, error, x_t = [jax.random.uniform(jax.random.key(i), (2, 32, 32, 3), minval=-1.0)
                       for i in range(3)]
  x = hear_net.input_of(net, y_hat, error, x_t)
  variables = net.init(jax.random.key(0), x)
  assert variables['params'] and all(k.startswith('mask_') for k in variables['params'])
  y, m = net.apply(variables, x, return_mask=True)
  np.testing.assert_allclose(y, m[..., None] * x_t + (1 - m[..., None]) * y_hat, atol=1e-6)
  far_down = jax.tree.map(lambda a: a, variables)
  far_down['params']['mask_out_conv']['bias'] = jnp.full((1,), -60.0)
  np.testing.assert_allclose(net.apply(far_down, x), y_hat, atol=1e-6)

  # Spread m around 0.5 so the threshold splits it.
  spread = jax.tree.map(lambda a: a, variables)
  bias = variables['params']['mask_out_conv']['bias']
  spread['params']['mask_out_conv']['bias'] = bias - jnp.median(jnp.log(m / (1 - m)))
  _, soft = net.apply(spread, x, return_mask=True)
  y_hard, m_hard = hard.apply(spread, x, return_mask=True)
  assert 0.1 < float(jnp.mean(soft > 0.5)) < 0.9
  np.testing.assert_array_equal(m_hard, (soft > 0.5).astype(jnp.float32))
  np.testing.assert_allclose(y_hard, jnp.where(soft[..., None] > 0.5, x_t, y_hat), atol=1e-6)
  (_, m_train), _ = hard.apply(spread, x, train=True, return_mask=True,
                               mutable=['batch_stats'])
  (_, m_soft_train), _ = net.apply(spread, x, train=True, return_mask=True,
                                   mutable=['batch_stats'])
  np.testing.assert_allclose(m_train, m_soft_train, atol=1e-6)
  assert not np.all((np.asarray(m_train) == 0) | (np.asarray(m_train) == 1))

  with pytest.raises(ValueError, match='keep_swap needs mask_channels'):
    hear_net.HEARNet(channels=TINY_CHANNELS, blend_mask=True, keep_swap=True).init(
        jax.random.key(0), x)
  with pytest.raises(ValueError, match='needs blend_mask and 0 <= t < 1'):
    hear_net.HEARNet(channels=TINY_CHANNELS, mask_threshold=0.5).init(
        jax.random.key(0), x[..., :6])
  with pytest.raises(ValueError, match='needs blend_mask and 0 <= t < 1'):
    hear_net.HEARNet(channels=TINY_CHANNELS, blend_mask=True, mask_threshold=1.0).init(
        jax.random.key(0), x)
  from fsjax.swap import export  # pylint: disable=g-import-not-at-top
  meta = {'image_size': 32, 'hear': dict(config.to_dict(), channels=list(TINY_CHANNELS),
                                         mask_channels=[2, 4, 4], mask_threshold=0.5)}
  built = export.build_hear(meta)
  assert built.keep_swap and built.mask_threshold == 0.5
  assert jax.tree.map(jnp.shape, export.abstract_hear(meta)['params']) == jax.tree.map(
      jnp.shape, variables['params'])
  del meta['hear']['keep_swap'], meta['hear']['mask_threshold']  # older exports
  built = export.build_hear(meta)
  assert not built.keep_swap and built.mask_threshold == 0.0
