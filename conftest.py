"""Test set-up: 4 fake CPU devices (before jax is imported), the real-faces folder and a
persistent compilation cache."""

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


@pytest.fixture(scope='module')
def jax_cache(tmp_path_factory):
  """A persistent JAX compilation cache for the requesting module, in-process and for its
  subprocesses (they get the path): a program compiled twice is compiled once.

  One per test session; FSJAX_TEST_JAX_CACHE=DIR keeps compiled programs between sessions.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  from jax.experimental.compilation_cache import compilation_cache
  path = (os.environ.get('FSJAX_TEST_JAX_CACHE')
          or str(tmp_path_factory.getbasetemp() / 'jax_cache'))
  options = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
             'jax_persistent_cache_min_entry_size_bytes')
  previous = {k: getattr(jax.config, k) for k in options}
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  compilation_cache.reset_cache()
  yield path
  for k, v in previous.items():
    jax.config.update(k, v)
  compilation_cache.reset_cache()
