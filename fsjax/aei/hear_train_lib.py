"""Pure HEAR-Net training functions (FaceShifter stage 2): state, inputs, losses, the step.

No I/O and no loop here (that is fsjax/aei/hear_trainer.py). Per device, inside
`jax.jit(jax.shard_map(...))` over 'data' (`make_train_step`):

  1. X_s, X_t uint8 [B, S, S, 3] -> [-1, 1]. The frozen AEI-Net (EMA params, inference-mode
     batch norm) and frozen identity encoder give
       Y_hat_st = AEI(X_t, z_id(X_s))   and   dY_t = X_t - AEI(X_t, z_id(X_t))
     (the heuristic error: what AEI-Net cannot reconstruct of the target, e.g. occluders).
  2. Y_st = HEAR(concat(Y_hat_st, dY_t)) (with config.hear.target_input, an fsjax option,
     concat(Y_hat_st, dY_t, X_t)), trained with (weights config.loss.*, paper: 1)
       L_id'  = mean(1 - cos(z_id(Y_st), z_id(X_s)))
       L_chg  = mean|Y_st - Y_hat_st|
       L_rec' = 0.5 * mean over same-identity pairs of mean((Y_st - X_t)^2)
     and, an fsjax option (config.loss.occ, 0 = the paper), the occluder term
       L_occ  = mean over the pixels of the pasted occluders of |Y_st - X_t|
     (the pipeline pastes them, so it knows where they are: there the right answer is X_t,
     for a swap as for a reconstruction), and, for a HEAR-Net with config.hear.blend_mask
     (Y_st = m * X_t + (1 - m) * Y'), the mask term (config.loss.mask)
       L_mask = mean over all pixels of BCE(m, pasted-occluder mask),
     each `lax.pmean`'d over 'data' before it is
     differentiated (global-batch gradients;
     BatchNorm statistics are averaged over 'data' inside HEAR-Net).
  3. Adam (config.optimizer); the non-finite guard applies all or nothing, as in AEI-Net.
"""

import dataclasses
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from clu import metrics as clu_metrics
from jax import lax
from jax.sharding import PartitionSpec as P

from fsjax.aei import train_lib
from fsjax.models import hear_net
from fsjax.train import parallel
from fsjax.train import step_utils

AXIS = parallel.DATA_AXIS


@dataclasses.dataclass(frozen=True)
class FrozenAEI:
  """The stage-1 networks HEAR-Net refines (unbound modules; their variables are passed to
  the step replicated, never differentiated).

  Attributes:
    generator: AEI-Net ([B, S, S, 3] in [-1, 1], z_id) -> (Y, z_att).
    identity: ArcFace IResNet ([B, 112, 112, 3] -> [B, D]).
    crop_mode: identity_crop mode of the AEI-Net's data ('resize' | 'crop_19_237').
    id_normalize: whether the AEI-Net was fed L2-normalised z_id (config.model.id_normalize).
  """
  generator: nn.Module
  identity: nn.Module
  crop_mode: str
  id_normalize: bool = True

  def embed(self, id_vars: Any, x: jax.Array, normalize: bool) -> jax.Array:
    """z_id [B, D] of faces [B, S, S, 3] in [-1, 1] (train_lib.identity_embedding)."""
    models = train_lib.Models(self.generator, None, self.identity, self.crop_mode)
    return train_lib.identity_embedding(models, id_vars, x, normalize=normalize)

  def swap(self, g_vars: Any, x_t: jax.Array, z: jax.Array) -> jax.Array:
    """AEI(X_t, z) [B, S, S, 3] float32 in [-1, 1], inference mode."""
    y, _ = self.generator.apply(g_vars, x_t, z, train=False)
    return y.astype(jnp.float32)


def hear_inputs(aei: FrozenAEI, g_vars: Any, id_vars: Any, x_s: jax.Array, x_t: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
  """(Y_hat_st, dY_t), both [B, S, S, 3] float32, of the frozen AEI-Net, gradient-free.

  Y_hat_st = AEI(X_t, z_id(X_s)) in [-1, 1]; dY_t = X_t - AEI(X_t, z_id(X_t)) in [-2, 2].
  """
  z_s = aei.embed(id_vars, x_s, aei.id_normalize)
  z_t = aei.embed(id_vars, x_t, aei.id_normalize)
  y_hat = aei.swap(g_vars, x_t, z_s)
  error = x_t - aei.swap(g_vars, x_t, z_t)
  return lax.stop_gradient(y_hat), lax.stop_gradient(error)


@flax.struct.dataclass
class HearState:
  """Everything that changes during HEAR-Net training (replicated over 'data').

  Attributes: step (int32 []), params, batch_stats, opt_state, nonfinite_count /
  nonfinite_total (int32 []). No RNG: HEAR-Net and its inputs are deterministic.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  nonfinite_count: jax.Array
  nonfinite_total: jax.Array


@flax.struct.dataclass
class HearMetrics(clu_metrics.Collection):
  """Per-step means over the global batch, averaged over a log interval (applied steps)."""
  loss: clu_metrics.Average
  id: clu_metrics.Average
  chg: clu_metrics.Average
  rec: clu_metrics.Average
  occ: clu_metrics.Average
  mask: clu_metrics.Average
  grad_norm: clu_metrics.Average
  same_fraction: clu_metrics.Average
  skipped: clu_metrics.Average


def build_hear(config: ml_collections.ConfigDict, axis_name: str | None = AXIS) -> nn.Module:
  """HEAR-Net of config.hear at compute dtype config.model.dtype."""
  return hear_net.from_config(config.hear, axis_name=axis_name, dtype=config.model.dtype)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam(config.optimizer.learning_rate, b1, b2) (paper: 4e-4, (0, 0.999)), optional
  global-norm clipping (grad_clip_norm > 0)."""
  opt = config.optimizer
  tx = optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2)
  if opt.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
  return tx


def create_state(config: ml_collections.ConfigDict, rng: jax.Array, hear: nn.Module,
                 tx: optax.GradientTransformation) -> HearState:
  """HEAR-Net at step 0 (eval-mode init, float32 params). Pure and jittable."""
  s = int(config.image_size)
  variables = hear.init(rng, jnp.zeros((1, s, s, hear.input_channels), jnp.float32),
                        train=False)
  return HearState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                   batch_stats=variables['batch_stats'],
                   opt_state=tx.init(variables['params']),
                   nonfinite_count=jnp.zeros((), jnp.int32),
                   nonfinite_total=jnp.zeros((), jnp.int32))


def change_loss(y: jax.Array, y_hat: jax.Array) -> jax.Array:
  """L_chg = mean|Y_st - Y_hat_st|."""
  return jnp.mean(jnp.abs(y - y_hat))


def occluder_loss(y: jax.Array, x_t: jax.Array, mask: jax.Array) -> jax.Array:
  """This device's share of L_occ (its `lax.pmean` over 'data' is the global mean).

  Args:
    y, x_t: [b, S, S, 3] in [-1, 1].
    mask: [b, S, S] (1 = a pasted occluder's pixel, 0 elsewhere).
  Returns:
    [] sum of |Y - X_t| over the masked pixels and channels of this device, divided by that
    count over all devices (over 'data') / the device count.
  """
  mask = mask.astype(jnp.float32)[..., None]
  count = lax.psum(jnp.sum(mask), AXIS) * y.shape[-1]
  return jnp.sum(jnp.abs(y - x_t) * mask) * lax.axis_size(AXIS) / jnp.maximum(count, 1.0)


def mask_loss(m: jax.Array, mask: jax.Array) -> jax.Array:
  """L_mask = mean binary cross-entropy of the blend mask m [b, S, S] in [0, 1] against the
  occluder mask [b, S, S] (1 = occluder), m clipped to [1e-6, 1 - 1e-6]."""
  m = jnp.clip(m, 1e-6, 1.0 - 1e-6)
  t = mask.astype(jnp.float32)
  return -jnp.mean(t * jnp.log(m) + (1.0 - t) * jnp.log1p(-m))


def train_step(state: HearState, batch: dict[str, jax.Array], g_vars: Any, id_vars: Any, *,
               config: ml_collections.ConfigDict, hear: nn.Module, aei: FrozenAEI,
               tx: optax.GradientTransformation) -> tuple[HearState, HearMetrics]:
  """One HEAR-Net update on this device's rows (inside shard_map over 'data').

  Args:
    state: replicated HearState.
    batch: 'source', 'target' uint8 [b, S, S, 3] (or float [-1, 1]); 'same' float32 [b]
      (1.0 where X_t shows X_s's identity, e.g. an occluded copy of X_s); optional
      'occluder_mask' uint8 [b, S, S] (1 = pasted occluder; needed when config.loss.occ > 0).
    g_vars: frozen AEI-Net variables {'params': EMA params, 'batch_stats'} (replicated).
    id_vars: frozen identity-encoder variables (replicated).
    config: config.loss (id, chg, rec, occ, mask).
    hear, aei, tx: the networks and the optimizer.
  Returns:
    (new state, HearMetrics of this step; replicated).
  """
  loss_cfg = config.loss
  x_s = step_utils.to_float_images(batch['source'])
  x_t = step_utils.to_float_images(batch['target'])
  same = batch['same'].astype(jnp.float32)
  num_devices = lax.axis_size(AXIS)
  num_same = lax.psum(jnp.sum(same), AXIS)
  mask = batch.get('occluder_mask')
  if loss_cfg.mask and not hear.blend_mask:
    raise ValueError('config.loss.mask > 0 needs config.hear.blend_mask')
  if mask is None:
    if loss_cfg.occ or loss_cfg.mask:
      raise ValueError('config.loss.occ / loss.mask > 0 need batches with an occluder_mask')
    mask = jnp.zeros(x_t.shape[:3], jnp.float32)
  y_hat, error = hear_inputs(aei, g_vars, id_vars, x_s, x_t)
  z_s = lax.stop_gradient(aei.embed(id_vars, x_s, True))

  def loss_fn(params):
    out, upd = hear.apply({'params': params, 'batch_stats': state.batch_stats},
                          hear_net.input_of(hear, y_hat, error, x_t), train=True,
                          return_mask=hear.blend_mask, mutable=['batch_stats'])
    y, blend = out if hear.blend_mask else (out, None)
    idl = jnp.mean(1.0 - jnp.sum(aei.embed(id_vars, y, True) * z_s, axis=-1))
    chg = change_loss(y, y_hat)
    # Local share of the global same-pair mean: pmean over devices restores it exactly.
    per = 0.5 * jnp.mean(jnp.square(y - x_t), axis=(1, 2, 3)) * same
    rec = jnp.sum(per) * num_devices / jnp.maximum(num_same, 1.0)
    occ = occluder_loss(y, x_t, mask)
    bce = mask_loss(blend, mask) if blend is not None else jnp.zeros((), jnp.float32)
    total = (loss_cfg.id * idl + loss_cfg.chg * chg + loss_cfg.rec * rec
             + loss_cfg.occ * occ + loss_cfg.mask * bce)
    terms = lax.pmean({'loss': total, 'id': idl, 'chg': chg, 'rec': rec, 'occ': occ,
                       'mask': bce}, AXIS)
    return terms['loss'], (terms, upd['batch_stats'])

  (_, (terms, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, new_opt = tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  grad_norm = optax.global_norm(grads)
  ok = step_utils.all_finite(terms, grad_norm)
  new_state = state.replace(
      step=state.step + 1,
      params=step_utils.select_if(ok, new_params, state.params),
      batch_stats=step_utils.select_if(ok, new_stats, state.batch_stats),
      opt_state=step_utils.select_if(ok, new_opt, state.opt_state),
      nonfinite_count=jnp.where(ok, 0, state.nonfinite_count + 1).astype(jnp.int32),
      nonfinite_total=state.nonfinite_total + (~ok).astype(jnp.int32))
  values = dict(terms, grad_norm=grad_norm,
                same_fraction=num_same / (same.shape[0] * num_devices))
  return new_state, HearMetrics.empty().replace(**step_utils.guarded_averages(ok, values))


def make_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                    hear: nn.Module, aei: FrozenAEI, tx: optax.GradientTransformation,
                    donate: bool = True) -> Callable[..., tuple[HearState, HearMetrics]]:
  """step(state, batch, g_vars, id_vars) -> (state, metrics), compiled as
  jit(shard_map(train_step, in_specs=(P(), P('data'), P(), P())))."""
  fn = lambda state, batch, g_vars, id_vars: train_step(  # pylint: disable=g-long-lambda
      state, batch, g_vars, id_vars, config=config, hear=hear, aei=aei, tx=tx)
  return parallel.data_parallel(fn, mesh, in_specs=(P(), P(AXIS), P(), P()),
                                out_specs=(P(), P()), donate_argnums=(0,) if donate else ())


def make_refine_fn(hear: nn.Module, aei: FrozenAEI) -> Callable[..., tuple[jax.Array, ...]]:
  """Jitted refine(hear_vars, g_vars, id_vars, x_s, x_t) -> (Y_hat_st, Y_st, dY_t), each
  [B, S, S, 3] float32, and for a blend_mask HEAR-Net the mask m [B, S, S] in [0, 1] as a
  fourth (inference mode; for sample grids and evaluation)."""

  def refine(hear_vars, g_vars, id_vars, x_s, x_t):
    x_s, x_t = step_utils.to_float_images(x_s), step_utils.to_float_images(x_t)
    y_hat, error = hear_inputs(aei, g_vars, id_vars, x_s, x_t)
    out = hear.apply(hear_vars, hear_net.input_of(hear, y_hat, error, x_t), train=False,
                     return_mask=hear.blend_mask)
    return (y_hat, out[0], error, out[1]) if hear.blend_mask else (y_hat, out, error)

  return jax.jit(refine)


def heuristic_error(aei: FrozenAEI) -> Callable[[Any, Any, jax.Array], jax.Array]:
  """Jitted err(g_vars, id_vars, x uint8 [B, S, S, 3]) -> [B] mean|X - AEI(X, z_id(X))|, the
  per-image score by which the hardest examples are chosen."""

  def err(g_vars, id_vars, x):
    x = step_utils.to_float_images(x)
    y = aei.swap(g_vars, x, aei.embed(id_vars, x, aei.id_normalize))
    return jnp.mean(jnp.abs(x - y), axis=(1, 2, 3))

  return jax.jit(err)
