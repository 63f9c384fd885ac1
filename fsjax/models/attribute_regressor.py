"""A small CNN that regresses attribute parameters (pose, expression) from a face image.

The evaluation of swaps on synthetic faces (fsjax.eval.regressor) trains it to predict the
renderer's yaw / pitch / roll and expression parameters, standing in for Hopenet and 3DMM
fitting, which only work on real faces.

Layout: a narrow 3x3 stride-1 stem conv of widths[0] channels at full resolution (a smile
lifts the mouth corners by ~2 px of a 64 px face; with it the held-out errors were 4.64 deg /
0.260 against 4.95 / 0.317 with a stride-2 stem, docs/evaluation.md; wide full-resolution
convs would cost most of the network on a CPU),
then per further width w a 3x3 stride-2 conv and a 3x3 stride-1 conv, ReLU after each; the
feature map is flattened (the head still sees where features are, which is what pose is
about), one ReLU dense layer and a linear output. No normalisation layers: nothing to carry
between training and inference but the weights.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.models import cpu_conv


class AttributeRegressor(nn.Module):
  """Image [B, S, S, 3] in [-1, 1] -> float32 [B, num_outputs] (standardised targets).

  Attributes:
    widths: conv channels: the full-resolution stem, then one per stage halving the
      resolution.
    dense: width of the hidden dense layer.
    num_outputs: regressed values.
  """
  widths: Sequence[int] = (8, 16, 32, 64, 128)
  dense: int = 128
  num_outputs: int = 9

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    x = nn.relu(cpu_conv.Conv(self.widths[0], (3, 3), padding='SAME')(x))
    for w in self.widths[1:]:
      x = nn.relu(cpu_conv.Conv(w, (3, 3), strides=(2, 2), padding='SAME')(x))
      x = nn.relu(cpu_conv.Conv(w, (3, 3), padding='SAME')(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.dense)(x))
    return nn.Dense(self.num_outputs)(x)
