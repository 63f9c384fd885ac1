"""Pieces every pure train step uses: image scaling, the finiteness test, all-or-nothing
updates and metric averages of applied steps."""

from typing import Any

import jax
import jax.numpy as jnp
from clu import metrics as clu_metrics


def to_float_images(x: jax.Array) -> jax.Array:
  """uint8 [..., 3] (0-255) -> float32 (x - 127.5) / 127.5 in [-1, 1]; float input is taken
  as [-1, 1] already."""
  if x.dtype == jnp.uint8:
    return (x.astype(jnp.float32) - 127.5) / 127.5
  return x.astype(jnp.float32)


def all_finite(*trees: Any) -> jax.Array:
  """bool [] : every element of every leaf of `trees` is finite."""
  ok = jnp.array(True)
  for leaf in jax.tree.leaves(trees):
    ok = ok & jnp.all(jnp.isfinite(leaf))
  return ok


def select_if(ok: jax.Array, new: Any, old: Any) -> Any:
  """`new` where ok else `old`, leaf by leaf (the non-finite guard applies all or nothing)."""
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def guarded_averages(ok: jax.Array, values: dict[str, jax.Array]
                     ) -> dict[str, clu_metrics.Average]:
  """{name: Average} of this step's values, counted only when the step was applied (`ok`),
  plus 'skipped' (1.0 for a skipped step) counted always."""
  count = ok.astype(jnp.int32)
  fields = {k: clu_metrics.Average(total=jnp.where(ok, v, 0.0).astype(jnp.float32), count=count)
            for k, v in values.items()}
  fields['skipped'] = clu_metrics.Average(total=(~ok).astype(jnp.float32),
                                          count=jnp.ones((), jnp.int32))
  return fields
