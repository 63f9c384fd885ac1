"""AEI-Net losses (FaceShifter eq. 2-6), on per-device batches.

Means are over the local batch; the step `lax.pmean`s them over 'data', which turns them
into global-batch means. Logits are lists of D-scale maps [B, h, w, 1]; images and
attribute maps are [B, H, W, C].
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ADV_KINDS = ('hinge', 'mean')


def generator_adv_loss(logits: Sequence[jax.Array], kind: str = 'hinge') -> jax.Array:
  """Adversarial generator loss, averaged over the D scales: mean(relu(1 - D(Y))) or mean(-D(Y))."""
  if kind not in ADV_KINDS:
    raise ValueError(f'loss.adv_g must be one of {ADV_KINDS}, got {kind!r}')
  terms = []
  for l in logits:
    l = l.astype(jnp.float32)
    terms.append(jnp.mean(nn.relu(1.0 - l)) if kind == 'hinge' else jnp.mean(-l))
  return sum(terms) / len(terms)


def hinge_d_terms(real_logits: Sequence[jax.Array], fake_logits: Sequence[jax.Array]
                  ) -> tuple[jax.Array, jax.Array]:
  """(mean_k mean(relu(1 - D_k(real))), mean_k mean(relu(1 + D_k(fake))))."""
  real = sum(jnp.mean(nn.relu(1.0 - l.astype(jnp.float32))) for l in real_logits)
  fake = sum(jnp.mean(nn.relu(1.0 + l.astype(jnp.float32))) for l in fake_logits)
  return real / len(real_logits), fake / len(fake_logits)


def attribute_loss(z_y: Sequence[jax.Array], z_t: Sequence[jax.Array],
                   full_res_channels: int = 0, full_res_weight: float = 1.0) -> jax.Array:
  """0.5 * sum over levels of mean((z_att^k(Y) - z_att^k(X_t))^2).

  With a full-resolution attribute level (its `full_res_channels` are the last channels of
  the last level), those channels count with `full_res_weight` and the paper's part of that
  level keeps weight 1: the full-resolution conv is nearly linear in the pixels, so at weight
  1 it acts as a pixel loss to X_t over the whole image, inner face included (docs/fidelity.md).
  """
  total = 0.0
  last = len(z_y) - 1
  for k, (a, b) in enumerate(zip(z_y, z_t, strict=True)):
    d = jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32))
    if k == last and full_res_channels and full_res_weight != 1.0:
      w = jnp.concatenate([jnp.ones((d.shape[-1] - full_res_channels,), jnp.float32),
                           jnp.full((full_res_channels,), full_res_weight, jnp.float32)])
      d = d * w
    total = total + jnp.mean(d)
  return 0.5 * total


def identity_loss(z_y: jax.Array, z_s: jax.Array) -> jax.Array:
  """mean(1 - cos) of two L2-normalised embeddings [B, D]."""
  return jnp.mean(1.0 - jnp.sum(z_y * z_s, axis=-1))


def reconstruction_terms(y: jax.Array, x_t: jax.Array, same: jax.Array) -> jax.Array:
  """Per-example 0.5 * mean((Y - X_t)^2) masked by `same` [B] (0 for different identities)."""
  per = 0.5 * jnp.mean(jnp.square(y.astype(jnp.float32) - x_t), axis=(1, 2, 3))
  return per * same


def mean_logit(logits: Sequence[jax.Array]) -> jax.Array:
  """Mean raw logit over the D scales (a monitoring figure)."""
  return sum(jnp.mean(l.astype(jnp.float32)) for l in logits) / len(logits)


def jitter_images(key: jax.Array, x: jax.Array, amount: float) -> jax.Array:
  """Random per-image zoom (1 +- amount) and shift (+- amount of the side) of x [B, H, W, C],
  bilinear, edges clamped: what L_id sees of Y with loss.id_jitter > 0 (an fsjax option), so
  that G cannot satisfy a small identity encoder with pixel-exact adversarial patterns."""
  b, h, w, _ = x.shape
  k_scale, k_shift = jax.random.split(key)
  scale = 1.0 + amount * jax.random.uniform(k_scale, (b, 1), minval=-1.0, maxval=1.0)
  shift = amount * jax.random.uniform(k_shift, (b, 2), minval=-1.0, maxval=1.0)
  ys = jnp.arange(h, dtype=jnp.float32) - 0.5 * (h - 1)
  xs = jnp.arange(w, dtype=jnp.float32) - 0.5 * (w - 1)

  def one(img, s, t):
    yy = jnp.clip(ys / s[0] + 0.5 * (h - 1) + t[0] * h, 0, h - 1)
    xx = jnp.clip(xs / s[0] + 0.5 * (w - 1) + t[1] * w, 0, w - 1)
    gy, gx = jnp.meshgrid(yy, xx, indexing='ij')
    chans = [jax.scipy.ndimage.map_coordinates(img[..., c], [gy, gx], order=1, mode='nearest')
             for c in range(img.shape[-1])]
    return jnp.stack(chans, -1)

  return jax.vmap(one)(x.astype(jnp.float32), scale, shift).astype(x.dtype)

