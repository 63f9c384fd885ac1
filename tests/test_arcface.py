"""IResNet (ArcFace) vs the PyTorch reference: parameter counts, golden parity, identity crop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsjax.models import arcface
from fsjax.bench.torch_reference import iresnet as torch_iresnet
from fsjax.bench.torch_reference import iresnet_convert


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _flax_param_count(arch):
  model = arcface.iresnet(arch)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 112, 112, 3)))
  return _count(shapes['params'])


@pytest.mark.parametrize('arch,millions', [('r50', 43.59), ('r100', 65.16)])
def test_param_counts_match_torch_and_arcface_torch(arch, millions):
  flax_count = _flax_param_count(arch)
  torch_count = sum(p.numel() for p in torch_iresnet.iresnet(arch).parameters())
  # The frozen `features` scale (D ones) is a torch Parameter but no Flax param.
  assert flax_count + 512 == torch_count
  assert round(torch_count / 1e6, 2) == millions


def test_param_counts_small_archs():
  for arch in ('tiny', 'r18', 'r34'):
    torch_count = sum(p.numel() for p in torch_iresnet.iresnet(arch).parameters())
    dim = arcface.ARCHS[arch][2]
    assert _flax_param_count(arch) + dim == torch_count, arch


def test_arch_name_names_the_layout():
  assert arcface.arch_name((3, 4, 14, 3), 64, 512) == 'r50'
  # The synthetic-identity encoder: the tiny layout with a 128-d embedding.
  assert arcface.arch_name((1, 1, 1, 1), 8, 128) == 'tiny-128d'
  assert arcface.arch_name((1, 1, 1, 1), 16, 128) == 'custom'
  assert arcface.arch_name((1, 1, 1, 1), 8, 128, stem_stride=2) == 'tiny-s2-128d'


def test_features_bn_has_no_trainable_scale():
  model = arcface.iresnet('tiny')
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 112, 112, 3)))
  assert set(variables['params']['features']) == {'bias'}
  assert set(variables['batch_stats']['features']) == {'mean', 'var'}


def _reference(arch, seed, stem_stride=1):
  torch.manual_seed(seed)
  model = torch_iresnet.iresnet(arch, stem_stride=stem_stride)
  torch_iresnet.randomize_batchnorm(model, seed)
  calib = torch.rand(4, 3, 112, 112) * 2 - 1
  torch_iresnet.calibrate_batchnorm(model, calib)
  return model


@pytest.mark.parametrize('arch,stem_stride', [('tiny', 1), ('r18', 1), ('tiny', 2)])
@pytest.mark.parametrize('train', [False, True])
def test_parity_with_torch(arch, stem_stride, train):
  model_t = _reference(arch, seed=1, stem_stride=stem_stride)
  variables = iresnet_convert.torch_to_flax(model_t)
  x = np.random.RandomState(2).uniform(-1, 1, (2, 112, 112, 3)).astype(np.float32)

  model_t.train(train)
  captured = {}
  hook = model_t.fc.register_forward_hook(lambda m, i, o: captured.__setitem__('fc', o))
  with torch.no_grad():
    want = model_t(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  hook.remove()
  want_fc = captured['fc'].numpy()

  model = arcface.iresnet(arch, stem_stride=stem_stride)
  only_fc = lambda mdl, method: mdl.name == 'fc'  # pylint: disable=unnecessary-lambda-assignment
  mutable = ('batch_stats', 'intermediates') if train else ('intermediates',)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=train, mutable=mutable,
                                           capture_intermediates=only_fc))
  got, state = apply(variables, jnp.asarray(x))
  got, got_fc = np.asarray(got), np.asarray(state['intermediates']['fc']['__call__'][0])
  assert got.shape == (2, arcface.ARCHS[arch][2])
  assert np.abs(want).max() > 0.1  # a meaningful, non-degenerate output
  err_fc, err = np.abs(got_fc - want_fc).max(), np.abs(got - want).max()
  print(f'{arch} train={train}: max abs err fc {err_fc:.2e} (max |fc| '
        f'{np.abs(want_fc).max():.2f}), output {err:.2e} (max |y| {np.abs(want).max():.2f})')
  assert err_fc < 1e-4
  if train:
    # Running means follow the same momentum rule (variances differ: torch keeps the
    # unbiased estimate, Flax the biased one).
    sd = model_t.state_dict()
    for name in ('bn1', 'bn2', 'features'):
      np.testing.assert_allclose(state['batch_stats'][name]['mean'],
                                 sd[f'{name}.running_mean'].numpy(), atol=1e-5)
    # Train-mode BatchNorm1d over a batch of 2 maps each feature to about +-1 divided by
    # |fc_0 - fc_1|: where two fc outputs nearly coincide it amplifies fp32 rounding
    # (torch fp32 itself is 3.5e-4 off a float64 torch run for r18, Flax 1.2e-4).
    gap = np.abs(want_fc[0] - want_fc[1])
    bound = 1e-4 * np.maximum(1.0, 0.05 / gap)
    assert np.all(np.abs(got - want) <= bound[None]), err
  else:
    assert err < 1e-4


def test_bfloat16_close_to_float32():
  model_t = _reference('tiny', seed=3)
  variables = iresnet_convert.torch_to_flax(model_t)
  x = jnp.asarray(np.random.RandomState(4).uniform(-1, 1, (2, 112, 112, 3)), jnp.float32)
  f32 = arcface.iresnet('tiny').apply(variables, x)
  bf16 = jax.jit(arcface.iresnet('tiny', dtype='bfloat16').apply)(variables, x)
  assert bf16.dtype == jnp.float32 and np.all(np.isfinite(bf16))
  cos = np.sum(f32 * bf16, -1) / np.linalg.norm(f32, axis=-1) / np.linalg.norm(bf16, axis=-1)
  assert cos.min() > 0.99, cos  # bfloat16 embeddings: cosine > 0.99 to float32


def test_rejects_wrong_input_size():
  model = arcface.iresnet('tiny')
  with pytest.raises(ValueError, match='112'):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 128, 128, 3)))


@pytest.mark.parametrize('size', [64, 128, 256])
@pytest.mark.parametrize('mode', ['crop_19_237', 'resize'])
def test_identity_crop_shape(size, mode):
  out = arcface.identity_crop(jnp.zeros((2, size, size, 3)), mode)
  assert out.shape == (2, 112, 112, 3)


@pytest.mark.parametrize('mode,size', [('crop_19_237', 256), ('resize', 256), ('resize', 64)])
def test_identity_crop_matches_torch(mode, size):
  x = np.random.RandomState(5).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
  if mode == 'crop_19_237':
    xt = xt[:, :, 19:237, 19:237]
  want = F.interpolate(xt, (112, 112), mode='bilinear', align_corners=True)
  want = want.numpy().transpose(0, 2, 3, 1)
  got = np.asarray(arcface.identity_crop(jnp.asarray(x), mode))
  # Torch computes the source coordinates in float32 (about 3e-5 off at 256 px).
  np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize('size', [128, 512])
def test_identity_crop_same_region_at_every_size(size):
  # Horizontal ramp whose value is the 256-px pixel-index coordinate of each pixel centre.
  ramp = (np.arange(size) + 0.5) * 256 / size - 0.5
  x = np.broadcast_to(ramp[None, None, :, None], (1, size, size, 1)).astype(np.float32)
  got = np.asarray(arcface.identity_crop(jnp.asarray(x), 'crop_19_237'))[0, 0, :, 0]
  np.testing.assert_allclose(got, np.linspace(19, 236, 112), atol=1e-3)


def test_identity_crop_is_differentiable():
  x = jnp.ones((1, 256, 256, 3))
  g = jax.grad(lambda v: arcface.identity_crop(v, 'crop_19_237').sum())(x)
  assert g[0, 0, 0, 0] == 0 and g[0, 100, 100, 0] > 0
  np.testing.assert_allclose(g.sum(), 112 * 112 * 3, rtol=1e-5)
