"""Tests of fsjax.models (AEI-Net, discriminator): shapes, parameter counts, PyTorch parity, bf16.

The PyTorch reference lives in tests/torch_reference (aei.py, discriminator.py, convert.py).
Parity runs at the tiny widths of configs/tiny.py (64 px) so the file stays fast on a CPU.
"""

import itertools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from configs import default as default_config
from configs import mindslab_variant as mindslab_config
from configs import tiny as tiny_config
from fsjax import models
from fsjax.models import aad
from fsjax.models import aei_net
from fsjax.models import attributes
from fsjax.models import discriminator
from fsjax.models import layers
from fsjax.bench.torch_reference import aei as t_aei
from fsjax.bench.torch_reference import convert
from fsjax.bench.torch_reference import discriminator as t_disc
from fsjax.bench.torch_reference import convert as torch_convert

TOL = 1e-4  # max |flax - torch| <= TOL * max(1, max |torch|), float32
BF16_REL_L2 = 5e-2  # bound on ||bf16 - fp32|| / ||fp32|| (see test_bfloat16_close_to_float32)

TINY = tiny_config.get_config()


@pytest.fixture(autouse=True, scope='module')
def _fast_compiles():
  """XLA CPU compile time dominates these tests: compile without most optimisations (~2x).

  Restored after the module so other test files keep the default.
  """
  previous = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


def _nparams(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _t2j(x):
  """NCHW torch tensor -> NHWC jax array (2-D tensors pass through)."""
  a = x.detach().numpy()
  return jnp.asarray(np.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a)


def _assert_close(flax_out, torch_out, tol=TOL, what=''):
  ref = torch_out.detach().numpy()
  if ref.ndim == 4:
    ref = np.transpose(ref, (0, 2, 3, 1))
  got = np.asarray(flax_out, np.float32)
  assert got.shape == ref.shape, (what, got.shape, ref.shape)
  err = float(np.max(np.abs(got - ref)))
  scale = max(1.0, float(np.max(np.abs(ref))))
  assert err <= tol * scale, f'{what}: max abs err {err:.3g} (scale {scale:.3g})'


_randomize_bn = torch_convert.randomize_batch_norm


def _variables(module, converted, *args):
  """Checks the converted tree against module.init's (names and shapes), returns jnp arrays."""
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))
  abstract = {k: v for k, v in abstract.items() if v}
  converted = {k: v for k, v in converted.items() if v}
  shapes = lambda t: jax.tree.map(lambda x: tuple(x.shape), t)
  assert shapes(converted) == shapes(abstract)
  return jax.tree.map(jnp.asarray, converted)


class _Case(NamedTuple):
  """One Flax module vs its torch twin; check(flax_out, torch_out, mode) compares outputs."""
  module: Any
  t_model: Any
  variables: Any
  t_inputs: tuple
  j_inputs: tuple
  check: Callable
  to_flax: Callable | None = None  # the converter, for BN models (enables train mode)


def _compare_modes(*cases: _Case):
  """Runs flax and torch in eval mode, and in train mode for cases with BatchNorm.

  In train mode the updated running means must agree too (torch momentum 0.1 == flax 0.9;
  running variances differ by n / (n - 1)). All Flax runs share one jit (one compilation).
  """

  @jax.jit
  def run(all_vars, all_inputs):
    outs = []
    for c, v, args in zip(cases, all_vars, all_inputs):
      out = c.module.apply(v, *args, False)
      train = c.module.apply(v, *args, True, mutable=['batch_stats']) if c.to_flax else None
      outs.append((out, train))
    return outs

  outs = run([c.variables for c in cases], [c.j_inputs for c in cases])
  for c, (f_eval, f_train) in zip(cases, outs):
    c.t_model.eval()
    with torch.no_grad():
      c.check(f_eval, c.t_model(*c.t_inputs), 'eval')
    if c.to_flax is None:
      continue
    c.t_model.train()
    with torch.no_grad():
      t_out = c.t_model(*c.t_inputs)
    out, updates = f_train
    c.check(out, t_out, 'train')
    got = jax.tree_util.tree_flatten_with_path(updates['batch_stats'])[0]
    exp = jax.tree_util.tree_flatten_with_path(c.to_flax(c.t_model)['batch_stats'])[0]
    assert [p for p, _ in got] == [p for p, _ in exp] and got
    for (path, a), (_, b) in zip(got, exp):
      if path[-1].key == 'mean':
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4,
                                   err_msg=jax.tree_util.keystr(path))


# ---------------------------------------------------------------------------------------
# Layers.


def test_layers_match_torch():
  """Bilinear align_corners (up/down, odd sizes, bf16), instance norm, avg-pool, get_dtype."""
  torch.manual_seed(0)
  x = torch.randn(2, 3, 5, 7)
  for size in [(9, 13), (3, 4), (1, 3), (5, 7)]:
    ref = F.interpolate(x, size=size, mode='bilinear', align_corners=True)
    _assert_close(layers.resize_bilinear_align_corners(_t2j(x), size), ref, 1e-6, str(size))
  y16 = layers.resize_bilinear_align_corners(_t2j(x).astype(jnp.bfloat16), (9, 13))
  assert y16.dtype == jnp.bfloat16
  _assert_close(layers.upsample2x(_t2j(x)), F.interpolate(
      x, scale_factor=2, mode='bilinear', align_corners=True), 1e-6, 'x2')
  _assert_close(layers.instance_norm(_t2j(3 * x + 1)),
                F.instance_norm(3 * x + 1, eps=1e-5), 1e-5, 'instance_norm')
  for hw in [(5, 7), (8, 8), (9, 6)]:
    xi = torch.randn(2, 3, *hw)
    ref = F.avg_pool2d(xi, 3, stride=2, padding=1, count_include_pad=False)
    _assert_close(layers.avg_pool_3x3_s2(_t2j(xi)), ref, 1e-6, f'avg_pool {hw}')
  assert layers.get_dtype('bfloat16') == jnp.bfloat16
  assert layers.get_dtype('float32') == jnp.float32
  assert layers.get_dtype(jnp.bfloat16) == jnp.bfloat16
  with pytest.raises(ValueError):
    layers.get_dtype('float8')


def test_layer_gradients_and_precision():
  """The resize's gradients (x2: autodiff of the shifted sums; other sizes: the hand-written
  transpose, up and down) equal autograd's; both layers stay exact (vs float64) where
  torch's float32 arithmetic drifts."""
  rs = np.random.RandomState(1)
  for size_in, size_out in [((5, 7), (10, 14)), ((16, 16), (32, 32)), ((5, 7), (9, 13)),
                            ((9, 6), (4, 5))]:
    x = rs.randn(2, *size_in, 3).astype(np.float32)
    g = rs.randn(2, *size_out, 3).astype(np.float32)
    xt = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_()
    ref = F.interpolate(xt, size=size_out, mode='bilinear', align_corners=True)
    (ref * torch.tensor(g).permute(0, 3, 1, 2)).sum().backward()
    y, vjp = jax.vjp(lambda a, s=size_out: layers.resize_bilinear_align_corners(a, s),
                     jnp.asarray(x))
    _assert_close(y, ref.detach(), 1e-5, f'resize {size_in}->{size_out}')
    _assert_close(vjp(jnp.asarray(g))[0], xt.grad, 1e-5, f'resize grad {size_in}')
  # 256 -> 112 (the identity crop): float64 interpolation matrices as the truth.
  x = rs.randn(1, 256, 256, 2)
  m = layers._align_corners_matrix(256, 112)
  truth = np.einsum('oh,pw,bhwc->bopc', m, m, x)
  got = np.asarray(layers.resize_bilinear_align_corners(jnp.asarray(x, jnp.float32), (112, 112)))
  assert np.abs(got - truth).max() < 2e-6
  # Instance norm of a map whose mean is 1e4 x its spread (one-pass moments, shifted).
  x = (rs.randn(2, 16, 16, 4) * 0.01 + 100.0).astype(np.float32).astype(np.float64)
  truth = (x - x.mean((1, 2), keepdims=True)) / np.sqrt(x.var((1, 2), keepdims=True) + 1e-5)
  got = np.asarray(layers.instance_norm(jnp.asarray(x, jnp.float32)))
  assert np.abs(got - truth).max() < 1e-4
  gx = jax.grad(lambda a: jnp.sum(layers.instance_norm(a) * jnp.arange(4.0)))(
      jnp.asarray(x, jnp.float32))
  xt = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_()  # float64 autograd
  (F.instance_norm(xt, eps=1e-5) * torch.arange(4.0, dtype=torch.float64).view(1, 4, 1, 1)
   ).sum().backward()
  np.testing.assert_allclose(np.asarray(gx), xt.grad.permute(0, 2, 3, 1).numpy(), atol=2e-2)


# ---------------------------------------------------------------------------------------
# Shapes and parameter counts at full size (abstract evaluation only).


def test_full_size_shapes():
  """Default config at 256 px: every z_att level as in the design table, y [B,256,256,3]."""
  config = default_config.get_config()
  g = models.build_generator(config)
  x = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
  z = jax.ShapeDtypeStruct((2, config.model.id_dim), jnp.float32)
  variables = jax.eval_shape(g.init, jax.random.key(0), x, z)
  (y, z_att) = jax.eval_shape(lambda v, a, b: g.apply(v, a, b, False), variables, x, z)
  assert y.shape == (2, 256, 256, 3) and y.dtype == jnp.float32
  expected = [(2, 1024), (4, 2048), (8, 1024), (16, 512), (32, 256), (64, 128), (128, 64),
              (256, 64)]
  assert [(a.shape[1], a.shape[3]) for a in z_att] == expected
  assert all(a.shape[0] == 2 and a.shape[1] == a.shape[2] for a in z_att)
  assert attributes.attribute_channels(config.model.attr_channels) == tuple(
      c for _, c in expected)
  z_att2 = jax.eval_shape(lambda v, a: g.apply(v, a, False, method='attributes'), variables, x)
  assert [a.shape for a in z_att2] == [a.shape for a in z_att]

  d = models.build_discriminator(config)
  d_vars = jax.eval_shape(d.init, jax.random.key(0), x)
  logits = jax.eval_shape(lambda v, a: d.apply(v, a, False), d_vars, x)
  # pix2pixHD n_layers 6: 256 -> 129 -> 65 -> 33 -> 17 -> 9 -> 5 -> (s1) 6 -> 7.
  assert [l.shape for l in logits] == [(2, 7, 7, 1), (2, 5, 5, 1), (2, 4, 4, 1)]


def _flax_g_counts(model):
  v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 256, 256, 3)),
                     jnp.zeros((1, model.id_dim)))
  return _nparams(v['params']['encoder']), _nparams(v['params']['generator'])


def _flax_d_count(model):
  v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 256, 256, 3)))
  return _nparams(v['params'])


def test_param_counts_match_torch_and_anchors():
  """Flax == torch reference counts, and the anchors.

  G+E 184.34M = 67.09M + 117.26M (default); 439.31M (mindslab public build: 256-d z_id,
  biased convs); D over 3 scales 8.29M / 33.46M / 46.05M for n_layers 3 / 5 / 6.
  The anchors pin down: att and mask convs share the kernel size (3x3 mask in the mindslab
  build), biased att / mask / Dense layers, affine AAD BatchNorm, biased ResBlk convs in
  mindslab, bias-free encoder convs, biased D convs with affine-free instance norm.
  """
  cfg = default_config.get_config()
  enc, gen = _flax_g_counts(models.build_generator(cfg))
  with torch.device('meta'):
    ref = t_aei.from_model_config(cfg.model)
  assert enc == t_aei.count_params(ref.encoder)
  assert gen == t_aei.count_params(ref.generator)
  assert round(enc / 1e6, 2) == 67.09
  assert round(gen / 1e6, 2) == 117.26
  assert round((enc + gen) / 1e6, 2) == 184.34

  # mindslab_variant config (512-d z_id): Flax == torch.
  ms = mindslab_config.get_config()
  enc, gen = _flax_g_counts(models.build_generator(ms))
  with torch.device('meta'):
    ref = t_aei.from_model_config(ms.model)
  assert enc + gen == t_aei.count_params(ref) == 446_550_278

  # mindslab's public build: 256-d z_id, biased convs -> 439.31M.
  ms.model.id_dim = 256
  enc, gen = _flax_g_counts(models.build_generator(ms))
  with torch.device('meta'):
    ref = t_aei.from_model_config(ms.model)
  assert enc + gen == t_aei.count_params(ref)
  assert round((enc + gen) / 1e6, 2) == 439.31

  for n_layers, anchor in [(3, 8.29), (5, 33.46), (6, 46.05)]:
    cfg.discriminator.n_layers = n_layers
    n = _flax_d_count(models.build_discriminator(cfg))
    assert n == t_aei.count_params(t_disc.from_config(cfg.discriminator))
    assert round(n / 1e6, 2) == anchor, (n_layers, n)
  # mindslab D (n_layers 3, affine BatchNorm): 8,299,587 = 8.30M (BN adds 5,376).
  n = _flax_d_count(models.build_discriminator(mindslab_config.get_config()))
  assert n == t_aei.count_params(t_disc.from_config(mindslab_config.get_config().discriminator))
  assert n == 8_299_587


# ---------------------------------------------------------------------------------------
# Golden parity at tiny size.

AAD_VARIANTS = list(itertools.product(['instance', 'batch'], [1, 3], ['one', 'full']))


@pytest.mark.parametrize('norm,kernel,mask', AAD_VARIANTS)
def test_aad_parity(norm, kernel, mask):
  """AADLayer, AADResBlock and AADGenerator == torch, eval and train mode, every variant."""
  torch.manual_seed(AAD_VARIANTS.index((norm, kernel, mask)))
  b, c_id = 2, TINY.model.id_dim
  conv_bias = kernel == 3  # cover both bias settings across the variants
  kw = dict(norm=norm, att_kernel=kernel, mask_channels=mask)
  bn = norm == 'batch'
  z_id = torch.randn(b, c_id)

  def check(tag):
    return lambda f, t, mode: _assert_close(f, t, what=f'{tag} {mode}')

  # AAD layer.
  h, za = torch.randn(b, 16, 8, 8), torch.randn(b, 12, 8, 8)
  t_layer = _randomize_bn(t_aei.init_weights(t_aei.AADLayer(16, 12, c_id, **kw)))
  f_layer = aad.AADLayer(**kw)
  args = (_t2j(h), _t2j(za), jnp.asarray(z_id.numpy()))
  v_layer = _variables(f_layer, convert.aad_layer_to_flax(t_layer), *args)

  # ResBlk with a shortcut (cin != cout).
  t_blk = _randomize_bn(t_aei.init_weights(
      t_aei.AADResBlk(16, 8, 12, c_id, conv_bias=conv_bias, **kw)), seed=1)
  f_blk = aad.AADResBlock(out_channels=8, conv_bias=conv_bias, **kw)
  v_blk = _variables(f_blk, convert.aad_resblk_to_flax(t_blk), *args)

  # Generator on random z_att (3 blocks, 8 px; the tiny-config one is in test_aei_net_parity).
  gen_ch, att_ch = (8, 8, 4), (8, 4, 4)
  z_att = [torch.randn(b, c, 2 ** (k + 1), 2 ** (k + 1)) for k, c in enumerate(att_ch)]
  t_gen = _randomize_bn(t_aei.init_weights(t_aei.AADGenerator(
      gen_ch, att_ch, c_id, conv_bias=conv_bias, **kw)), seed=2)
  f_gen = aad.AADGenerator(channels=gen_ch, conv_bias=conv_bias, **kw)
  j_att = tuple(_t2j(z) for z in z_att)
  j_id = jnp.asarray(z_id.numpy())
  v_gen = _variables(f_gen, convert.generator_to_flax(t_gen), j_att, j_id)

  _compare_modes(
      _Case(f_layer, t_layer, v_layer, (h, za, z_id), args, check('AADLayer'),
            convert.aad_layer_to_flax if bn else None),
      _Case(f_blk, t_blk, v_blk, (h, za, z_id), args, check('AADResBlock'),
            convert.aad_resblk_to_flax if bn else None),
      _Case(f_gen, t_gen, v_gen, (z_att, z_id), (j_att, j_id), check('AADGenerator'),
            convert.generator_to_flax if bn else None))


@pytest.mark.parametrize('variant', ['default', 'mindslab'])
def test_aei_net_parity(variant):
  """AEINet (encoder + generator) == torch: y and every z_att level, eval and train.

  'default': configs/tiny.py at 64 px; 'mindslab': the mindslab AAD switches, 3 levels, 16 px.
  """
  cfg = tiny_config.get_config()
  size = 64
  if variant == 'mindslab':  # narrower and 16 px to save compile time
    cfg.model.attr_channels, cfg.model.gen_channels, size = (4, 8, 16), (32, 16, 8, 8), 16
    cfg.model.aad_norm, cfg.model.aad_att_kernel = 'batch', 3
    cfg.model.aad_mask_channels, cfg.model.conv_bias = 'full', True
  torch.manual_seed(3)
  t_model = _randomize_bn(t_aei.init_weights(t_aei.from_model_config(cfg.model)))
  f_model = models.build_generator(cfg)
  x = torch.rand(2, 3, size, size) * 2 - 1
  z_id = torch.randn(2, cfg.model.id_dim)
  args = (_t2j(x), jnp.asarray(z_id.numpy()))
  v = _variables(f_model, convert.aei_net_to_flax(t_model), *args)

  def check(f, t, mode):
    _assert_close(f[0], t[0], what=f'y {mode}')
    assert len(f[1]) == len(t[1]) == len(cfg.model.attr_channels) + 1
    for k, (a, b) in enumerate(zip(f[1], t[1])):
      _assert_close(a, b, what=f'z_att[{k}] {mode}')

  # The `attributes` method is the encoder alone (before train mode moves torch's stats).
  t_model.eval()
  z_att = jax.jit(lambda v, x: f_model.apply(v, x, False, method='attributes'))(v, args[0])
  with torch.no_grad():
    for a, b in zip(z_att, t_model.get_attr(x)):
      _assert_close(a, b, what='attributes()')
  _compare_modes(_Case(f_model, t_model, v, (x, z_id), args, check, convert.aei_net_to_flax))


@pytest.mark.parametrize('norm,n_layers,num_d', [('instance', 3, 2), ('batch', 3, 2),
                                                 ('none', 5, 3)])
def test_discriminator_parity(norm, n_layers, num_d):
  """Multi-scale PatchGAN == torch (default torch init, so logits are O(1)), eval and train."""
  torch.manual_seed(4)
  t_model = _randomize_bn(t_disc.MultiscaleDiscriminator(num_d, n_layers, 8, 32, norm))
  f_model = discriminator.MultiscaleDiscriminator(num_d, n_layers, 8, 32, norm)
  x = torch.rand(2, 3, 64, 64) * 2 - 1
  args = (_t2j(x),)
  v = _variables(f_model, convert.discriminator_to_flax(t_model), *args)

  def check(f, t, mode):
    assert len(f) == len(t) == num_d
    for k, (a, b) in enumerate(zip(f, t)):
      assert a.dtype == jnp.float32
      _assert_close(a, b, what=f'scale {k} {mode}')

  _compare_modes(_Case(f_model, t_model, v, (x,), args, check,
                       convert.discriminator_to_flax if norm == 'batch' else None))


# ---------------------------------------------------------------------------------------
# Compute dtype, remat, BatchNorm across devices.


def _tiny_variables(cfg, seed):
  """Tiny AEINet + D variables copied from the torch reference (no Flax RNG init to compile)."""
  torch.manual_seed(seed)
  g = convert.aei_net_to_flax(t_aei.init_weights(t_aei.from_model_config(cfg.model)))
  d = convert.discriminator_to_flax(t_disc.init_weights(t_disc.from_config(cfg.discriminator)))
  return jax.tree.map(jnp.asarray, g), jax.tree.map(jnp.asarray, d)


def test_bfloat16_close_to_float32():
  """bf16 compute with fp32 params (tiny config, 64 px): finite, rel. L2 error < BF16_REL_L2.

  Checked on y, every z_att level and every discriminator scale (D fed the fp32 y).
  """
  cfg = tiny_config.get_config()
  gv, dv = _tiny_variables(cfg, seed=5)
  g32, d32 = models.build_generator(cfg), models.build_discriminator(cfg)
  cfg.model.dtype = 'bfloat16'
  g16, d16 = models.build_generator(cfg), models.build_discriminator(cfg)
  assert d16.dtype == 'bfloat16'
  key = jax.random.key(0)
  x = jax.random.uniform(key, (2, 64, 64, 3), minval=-1, maxval=1)
  z = jax.random.normal(jax.random.key(1), (2, cfg.model.id_dim))

  @jax.jit
  def run(gv, dv, x, z):
    y32, a32 = g32.apply(gv, x, z, False)
    y16, a16 = g16.apply(gv, x, z, False)
    return y32, a32, d32.apply(dv, y32, False), y16, a16, d16.apply(dv, y32, False)

  y32, a32, l32, y16, a16, l16 = run(gv, dv, x, z)
  assert y16.dtype == jnp.float32 and a16[-1].dtype == jnp.bfloat16
  assert all(l.dtype == jnp.float32 for l in l16)

  def rel(a, b):
    a = np.asarray(a, np.float32)
    assert np.all(np.isfinite(a))
    return float(np.linalg.norm(a - np.asarray(b)) / np.linalg.norm(np.asarray(b)))

  errors = {'y': rel(y16, y32)}
  errors.update({f'z_att{k}': rel(a, b) for k, (a, b) in enumerate(zip(a16, a32))})
  errors.update({f'd{k}': rel(a, b) for k, (a, b) in enumerate(zip(l16, l32))})
  print('bf16 relative L2 errors:', {k: round(v, 4) for k, v in errors.items()})
  assert max(errors.values()) < BF16_REL_L2, errors


def test_remat_wires_checkpoint():
  """remat=True: same variables and one checkpoint per ResBlk in the train-mode gradient.

  Traced only (no compile): the numerics of jax.checkpoint are JAX's business.
  """
  cfg = tiny_config.get_config()
  cfg.model.attr_channels, cfg.model.gen_channels = (4, 8), (16, 8, 4)  # 3 blocks, 8 px
  cfg.model.aad_norm = 'batch'  # the static train flag must reach the rematerialised blocks
  plain = models.build_generator(cfg)
  cfg.model.remat = True
  remat = models.build_generator(cfg)
  gv, _ = _tiny_variables(cfg, seed=6)
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3), minval=-1, maxval=1)
  z = jax.random.normal(jax.random.key(1), (2, cfg.model.id_dim))
  shapes = lambda m: jax.tree.map(lambda a: a.shape, jax.eval_shape(m.init, jax.random.key(0),
                                                                    x, z))
  assert shapes(plain) == shapes(remat)

  def loss(model, p):
    (y, _), _ = model.apply({**gv, 'params': p}, x, z, True, mutable=['batch_stats'])
    return jnp.mean(y ** 2)

  def count_checkpoints(model):
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: loss(model, p)))(gv['params'])
    n = 0
    stack = [jaxpr.jaxpr]
    while stack:
      j = stack.pop()
      for eqn in j.eqns:
        n += eqn.primitive.name in ('checkpoint', 'remat', 'remat2')
        stack.extend(jax.core.jaxprs_in_params(eqn.params))
    return n

  assert count_checkpoints(plain) == 0
  assert count_checkpoints(remat) == len(cfg.model.gen_channels)


@pytest.mark.parametrize('variant,remat', [('taotaonice', False), ('mindslab', True)])
def test_merged_attribute_convs_equal_separate(variant, remat):
  """aad_merge_attr_convs: same variables, output, batch stats and gradients as separate convs.

  Blocks with two and with three AAD layers (cin == cout and cin != cout); mindslab: 3x3
  attribute convs and batch norm in train mode, under remat.
  """
  cfg = (tiny_config if variant == 'taotaonice' else mindslab_config).get_config()
  cfg.model.attr_channels, cfg.model.gen_channels = (4, 8), (16, 16, 8)  # 8 px
  cfg.model.remat = remat
  cfg.model.aad_merge_attr_convs = False
  separate = models.build_generator(cfg)
  cfg.model.aad_merge_attr_convs = True
  merged = models.build_generator(cfg)
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3), minval=-1, maxval=1)
  z = jax.random.normal(jax.random.key(1), (2, cfg.model.id_dim))
  variables = separate.init(jax.random.key(2), x, z)
  shapes = lambda v: jax.tree.map(lambda a: a.shape, v)
  assert shapes(merged.init(jax.random.key(2), x, z)) == shapes(variables)
  train = variant == 'mindslab'

  def loss(model, params, x):
    (y, _), updates = model.apply({**variables, 'params': params}, x, z, train,
                                  mutable=['batch_stats'])
    return jnp.mean(y ** 2) + jnp.mean(y), (y, updates)

  grad = lambda model: jax.jit(jax.grad(lambda p, x: loss(model, p, x), argnums=(0, 1),
                                        has_aux=True))(variables['params'], x)
  (gp_s, gx_s), (y_s, upd_s) = grad(separate)
  (gp_m, gx_m), (y_m, upd_m) = grad(merged)
  np.testing.assert_allclose(y_m, y_s, atol=1e-5)
  np.testing.assert_allclose(gx_m, gx_s, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), upd_m, upd_s)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4), gp_m, gp_s)
  att = gp_m['generator']['block1']['aad_skip']['att_beta']['kernel']
  assert float(jnp.max(jnp.abs(att))) > 0  # the merged path reaches every layer's kernels

  def conv_count(model):
    jaxpr = str(jax.make_jaxpr(lambda p: loss(model, p, x)[0])(variables['params']))
    return jaxpr.count('conv_general_dilated')

  blocks = len(cfg.model.gen_channels)
  layers_per_block = [2, 3, 3]  # 16 -> 16, 16 -> 8, 8 -> 3
  assert conv_count(separate) - conv_count(merged) == sum(2 * n - 1 for n in layers_per_block)
  assert blocks == len(layers_per_block)


def test_batchnorm_axis_name_syncs_statistics():
  """Inside shard_map with axis_name='data', BN uses the global batch statistics."""
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  n = jax.device_count()
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
  torch.manual_seed(7)
  v = jax.tree.map(jnp.asarray, convert.aad_layer_to_flax(
      _randomize_bn(t_aei.init_weights(t_aei.AADLayer(16, 12, 64, norm='batch')))))
  h = jax.random.normal(jax.random.key(2), (2 * n, 8, 8, 16)) * 3 + jnp.arange(2 * n)[
      :, None, None, None] / n
  za = jax.random.normal(jax.random.key(3), (2 * n, 8, 8, 12))
  zi = jax.random.normal(jax.random.key(4), (2 * n, 64))
  ref, ref_upd = aad.AADLayer(norm='batch').apply(v, h, za, zi, True, mutable=['batch_stats'])
  layer = aad.AADLayer(norm='batch', axis_name='data')

  def step(h, za, zi):
    return layer.apply(v, h, za, zi, True, mutable=['batch_stats'])

  out, upd = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P('data'),) * 3,
                                   out_specs=(P('data'), P())))(h, za, zi)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), upd, ref_upd)
  # The check is sensitive: per-device batch means differ from the global one.
  per_device = np.asarray(h).reshape(n, -1, 16).mean(axis=1)
  assert np.max(np.abs(per_device - np.asarray(h).reshape(-1, 16).mean(axis=0))) > 1e-2


def test_aei_net_from_config_fields():
  """build_generator maps every config.model field (a wrong field would change the tree)."""
  cfg = mindslab_config.get_config()
  cfg.model.dtype = 'bfloat16'
  cfg.model.remat = True
  cfg.model.aad_merge_attr_convs = True
  g = models.build_generator(cfg, axis_name='data')
  assert isinstance(g, aei_net.AEINet)
  assert (g.aad_norm, g.aad_att_kernel, g.aad_mask_channels, g.conv_bias, g.dtype, g.remat,
          g.axis_name, g.id_dim, g.aad_merge_attr_convs) == (
              'batch', 3, 'full', True, 'bfloat16', True, 'data', 512, True)
  assert tuple(g.attr_channels) == tuple(cfg.model.attr_channels)
  d = models.build_discriminator(cfg)
  assert (d.num_d, d.n_layers, d.ndf, d.max_channels, d.norm, d.dtype) == (
      3, 3, 64, 512, 'batch', 'bfloat16')
  bad = tiny_config.get_config()
  bad.model.gen_channels = (128, 64)
  with pytest.raises(ValueError):
    jax.eval_shape(models.build_generator(bad).init, jax.random.key(0),
                   jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64)))
