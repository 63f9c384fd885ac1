"""fsjax: FaceShifter face swapping in JAX/Flax."""

__version__ = '0.1.0'


# Lazy re-exports: name -> (module, attribute). Importing fsjax stays cheap (no jax, flax
# or orbax until one of these is used). Add entries here rather than a second __getattr__.
_LAZY = {
    'load_identity_encoder': ('fsjax.identity.checkpoint', 'load_identity_encoder'),
    'load_swapper': ('fsjax.swap.swapper', 'load_swapper'),
    'Swapper': ('fsjax.swap.swapper', 'Swapper'),
    'export_swapper': ('fsjax.swap.export', 'export_swapper'),
}


def __getattr__(name):
  if name in _LAZY:
    import importlib  # pylint: disable=g-import-not-at-top
    module, attr = _LAZY[name]
    return getattr(importlib.import_module(module), attr)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(_LAZY))
