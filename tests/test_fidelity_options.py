"""Issue 19 options (off = the paper): a full-resolution attribute level, jittered L_id."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from configs import tiny
from fsjax import models
from fsjax.aei import losses
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
