"""Issue 19 options (off = the paper): a full-resolution attribute level, jittered L_id."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from configs import tiny
from fsjax import models
from fsjax.aei import losses
from fsjax.data import synthetic_faces
from fsjax.models import attributes


def _shapes(config):
  g = models.build_generator(config)
  x = jnp.zeros((1, config.image_size, config.image_size, 3))
  z = jnp.zeros((1, config.model.id_dim))
  variables = jax.eval_shape(lambda: g.init(jax.random.key(0), x, z))
  z_att = jax.eval_shape(lambda v: g.apply(v, x, z), variables)[1]
  return variables, [a.shape[-1] for a in z_att]


def test_paper_defaults_are_off():
  config = default.get_config()
  assert config.model.attr_full_res_channels == 0 and config.loss.id_jitter == 0.0


def test_full_res_level_adds_channels_to_the_last_level_only():
  config = tiny.get_config()
  base_vars, base = _shapes(config)
  config.model.attr_full_res_channels = 4
  vars_fr, with_fr = _shapes(config)
  assert with_fr[:-1] == base[:-1] and with_fr[-1] == base[-1] + 4
  assert tuple(with_fr) == attributes.attribute_channels(config.model.attr_channels, 4)
  assert 'full_res_conv' in vars_fr['params']['encoder']
  assert 'full_res_conv' not in base_vars['params']['encoder']


def test_jitter_images():
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 3)), jnp.float32)
  np.testing.assert_allclose(losses.jitter_images(jax.random.key(1), x, 0.0), x, atol=1e-6)
  y = losses.jitter_images(jax.random.key(1), x, 0.1)
  assert y.shape == x.shape and float(jnp.abs(y - x).mean()) > 0.01
  assert float(jnp.max(jnp.abs(y))) <= 1.0 + 1e-6  # interpolation stays in range
  grad = jax.grad(lambda v: losses.jitter_images(jax.random.key(1), v, 0.1).sum())(x)
  assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).sum()) > 0


def test_attribute_loss_full_res_weight():
  rng = np.random.default_rng(0)
  z_y = [jnp.asarray(rng.normal(size=(2, s, s, c)), jnp.float32) for s, c in ((4, 3), (8, 5))]
  z_t = [jnp.zeros_like(a) for a in z_y]
  sq = [np.square(np.asarray(a)) for a in z_y]
  np.testing.assert_allclose(losses.attribute_loss(z_y, z_t),
                             0.5 * (sq[0].mean() + sq[1].mean()), rtol=1e-6)
  # The last 2 channels of the last level are the full-resolution ones.
  for w in (0.0, 0.25):
    want = 0.5 * (sq[0].mean() + (sq[1][..., :3].sum(-1) + w * sq[1][..., 3:].sum(-1)).mean() / 5)
    np.testing.assert_allclose(losses.attribute_loss(z_y, z_t, 2, w), want, rtol=1e-6)
  np.testing.assert_allclose(losses.attribute_loss(z_y, z_t, 2, 1.0),
                             losses.attribute_loss(z_y, z_t), rtol=1e-6)


def test_att_full_res_is_declared_and_neutral_by_default():
  assert default.get_config().loss.att_full_res == 1.0


def test_unoccluded_subset_keeps_records_without_an_occluder():
  from fsjax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from fsjax.data import synthetic_faces  # pylint: disable=g-import-not-at-top
  column = synthetic_faces.ATTRIBUTE_FIELDS.index('occluder')
  kinds = [synthetic_faces.OCCLUDER_NONE, synthetic_faces.OCCLUDER_HAND,
           synthetic_faces.OCCLUDER_NONE, synthetic_faces.OCCLUDER_GLASSES]
  records = []
  for i, kind in enumerate(kinds):
    att = np.zeros([synthetic_faces.ATTRIBUTE_DIM], np.float32)
    att[column] = kind
    records.append({'image': np.full((4, 4, 3), i, np.uint8), 'label': i,
                    'attribute_params': att})
  sub = input_pipeline.unoccluded_subset(records)
  assert len(sub) == 2 and [int(sub[k]['image'][0, 0, 0]) for k in range(2)] == [0, 2]
  np.testing.assert_array_equal(sub.labels, [0, 2])
  # The AEI-Net and HEAR-Net trainers' shared switch (config.dataset.drop_occluded).
  import ml_collections  # pylint: disable=g-import-not-at-top
  from fsjax.train import loop  # pylint: disable=g-import-not-at-top
  on = ml_collections.ConfigDict({'drop_occluded': True})
  off = ml_collections.ConfigDict({'drop_occluded': False})
  assert loop.drop_occluded_if_asked(off, records) is records
  assert len(loop.drop_occluded_if_asked(on, records)) == 2
  from configs import hear_default  # pylint: disable=g-import-not-at-top
  assert not default.get_config().dataset.drop_occluded
  assert not hear_default.get_config().dataset.drop_occluded
  try:
    input_pipeline.unoccluded_subset([{'image': records[0]['image'], 'label': 0}])
  except ValueError as e:
    assert 'attribute_params' in str(e)
  else:
    raise AssertionError('a source without attribute_params must be refused')


def _script(name):
  """scripts/NAME.py loaded as a module."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'scripts', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'{name}_script', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _fidelity_script():
  return _script('fidelity')


def test_face_colour_transfer_of_scripts_fidelity():
  fidelity = _fidelity_script()
  rng = np.random.default_rng(0)
  xt = rng.integers(0, 100, (6, 8, 8, 3)).astype(np.uint8)
  shift = rng.integers(10, 60, (6, 1, 1, 3))
  mask = np.zeros((6, 8, 8), bool)
  mask[:, 2:6, 2:6] = True
  gt = (xt + shift * mask[..., None]).astype(np.uint8)
  y_half = (xt + (shift // 2) * mask[..., None]).astype(np.uint8)
  assert abs(fidelity.face_colour_transfer(gt, xt, gt, mask) - 1.0) < 1e-9
  assert abs(fidelity.face_colour_transfer(xt, xt, gt, mask)) < 1e-9
  assert 0.4 < fidelity.face_colour_transfer(y_half, xt, gt, mask) < 0.5


def test_region_figures_of_scripts_fidelity():
  fidelity = _fidelity_script()
  xt = np.full((2, 8, 8, 3), 100, np.uint8)
  mask = np.zeros((2, 8, 8), bool)
  mask[:, 2:5, 2:5] = True  # 9 face pixels
  gt = xt.copy()
  gt[:, 2:5, 2:5] = 160  # the face changes ...
  gt[:, 6:8, 3:5] = 40  # ... and a 4-pixel "neck" outside it
  y = gt.copy()
  y[:, 6:8, 3:5] = 100  # the swap keeps the target's neck: error 60 there (4 px) ...
  y[:, 0, 0] = 130  # ... and 30 in one unchanged pixel; the face is exact
  np.testing.assert_array_equal(fidelity.changed_outside(xt, gt, mask)[0],
                                (gt[0, ..., 0] != 100) & ~mask[0])
  reg = fidelity.region_figures(y, xt, gt, mask)
  assert reg['face']['pixels'] == 9 / 64 and reg['changed']['pixels'] == 4 / 64
  assert reg['face']['error_share'] == 0.0
  np.testing.assert_allclose(reg['changed']['error_share'], 4 * 60**2 / (4 * 60**2 + 30**2))
  np.testing.assert_allclose(reg['unchanged']['error_share'], 30**2 / (4 * 60**2 + 30**2))
  assert abs(reg['face']['colour'] - 1.0) < 1e-9 and abs(reg['changed']['colour']) < 1e-9
  assert 'colour' not in reg['unchanged']
  oracle = fidelity.with_inner_face(xt, gt, mask)
  np.testing.assert_array_equal(oracle[mask], gt[mask])
  np.testing.assert_array_equal(oracle[~mask], xt[~mask])


def test_parameter_oracles_of_scripts_fidelity():
  # Each oracle is the ground truth re-rendered with one group of identity traits swapped
  # back: with the source's colours on the target (row "target + source colours") only the
  # other groups differ from GT, and "source + target G" differs from GT in G alone.
  fidelity = _fidelity_script()
  rng = np.random.default_rng(3)
  src = np.stack([synthetic_faces.sample_identity(rng) for _ in range(2)])
  tgt = np.stack([synthetic_faces.sample_identity(rng) for _ in range(2)])
  att = np.stack([synthetic_faces.sample_attributes(rng) for _ in range(2)])
  att[:, synthetic_faces.ATTRIBUTE_FIELDS.index('occluder')] = 0
  gt = synthetic_faces.render_batch(src, att, 32, hair_identity=tgt)
  pairs = {'identity_params': src, 'target_identity_params': tgt, 'attribute_params': att,
           'swap': gt}
  mask = np.ones((2, 32, 32), bool)
  out = fidelity.parameter_oracles(pairs, mask)
  assert len(out) == 2 * len(fidelity.IDENTITY_GROUPS)
  every = [k for _, names in fidelity.IDENTITY_GROUPS for k in names]
  assert sorted(every) == sorted(synthetic_faces.IDENTITY_FIELDS)  # the groups cover all
  # Swapping the colours (skin, lips, iris, brows) back to the target's changes GT most.
  assert out['source + target colours']['psnr'] < out['source + target nose']['psnr']
  # With the source equal to the target every oracle is GT itself.
  same = dict(pairs, target_identity_params=src,
              swap=synthetic_faces.render_batch(src, att, 32, hair_identity=src))
  for fig in fidelity.parameter_oracles(same, mask).values():
    assert fig['psnr'] >= 99


def test_ridge_r2_of_scripts_identity_probe():
  probe = _script('identity_probe')
  rng = np.random.default_rng(0)
  z = rng.normal(size=(400, 16))
  y = np.stack([z @ rng.normal(size=16) + 3.0, rng.normal(size=400)], 1)  # linear / noise
  r2 = probe.ridge_r2(z[:200], y[:200], z[200:], y[200:], alpha=1e-3)
  assert r2[0] > 0.999 and r2[1] < 0.05
  grouped = [k for _, names in probe.GROUPS for k in names]
  assert sorted(grouped) == sorted(synthetic_faces.IDENTITY_FIELDS)
