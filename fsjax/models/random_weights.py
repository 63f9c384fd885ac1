"""Seeded random weights for a Flax variables tree without compiling its `init`.

The jitted init of AEI-Net compiles for minutes on a small CPU; throughput does not depend
on the weights, and smoke tests only need some weights.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def random_variables(abstract: Any, seed: int = 0) -> Any:
  """Host arrays shaped like a ShapeDtypeStruct tree of Flax variables.

  Kernels ~ N(0, 1 / fan_in) (fan_in = product of all but the last dimension), biases and
  BatchNorm means 0, BatchNorm scales and variances 1, integer leaves 0.
  """
  rng = np.random.default_rng(seed)

  def leaf(path, spec):
    name = jax.tree_util.keystr(path)
    shape, dtype = tuple(spec.shape), spec.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
      return np.zeros(shape, dtype)
    if name.endswith("['var']") or name.endswith("['scale']"):
      return np.ones(shape, dtype)
    if name.endswith("['mean']") or name.endswith("['bias']") or len(shape) < 2:
      return np.zeros(shape, dtype)
    fan_in = int(np.prod(shape[:-1]))
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(dtype)

  return jax.tree_util.tree_map_with_path(leaf, abstract)
