"""Test set-up: 4 fake CPU devices (before jax is imported) and the real-faces folder."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture
def faces_dir():
  """The folder of real face photos named by FSJAX_TEST_FACES; skips when unset."""
  path = os.environ.get('FSJAX_TEST_FACES')
  if not path:
    pytest.skip('FSJAX_TEST_FACES is not set')
  return path
