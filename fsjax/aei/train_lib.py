"""Pure AEI-Net training functions: state, optimizers, losses and the data-parallel step.

No I/O and no loop here (that is fsjax/aei/trainer.py; the losses are fsjax/aei/losses.py). The step is written per device
and compiled with `jax.jit(jax.shard_map(...))` over the 1-D 'data' mesh of every
device of every host (`make_train_step`):

  1. X_s, X_t uint8 [B, S, S, 3] -> [-1, 1]; z_id = normalise(ArcFace(identity_crop(X_s)))
     with the frozen identity encoder (batch norm in inference mode); the raw embedding
     when not config.model.id_normalize (GHOST's weights).
  2. Generator update: Y, z_att(X_t) = G(X_t, z_id); L_G = adv * L_adv + att * L_att
     + id * L_id + rec * L_rec (weights config.loss.*):
       L_adv = mean over D scales of mean(relu(1 - D(Y)))  (or mean(-D(Y)), loss.adv_g)
       L_att = 0.5 * sum_k mean((z_att^k(Y) - z_att^k(X_t))^2)   (z_att(Y) from G's encoder)
       L_id  = mean(1 - cos(e(Y), e(X_s)))   (embeddings of identity_crop of both; a cosine
                                             whatever id_normalize, as GHOST's train.py)
       L_rec = 0.5 * mean over same-identity pairs of mean((Y - X_t)^2)   (0 without any)
  3. Discriminator update on the same step (D before, Y of step 2 with stop_gradient):
       L_D = 0.5 * [mean_k mean(relu(1 - D_k(X_real))) + mean_k mean(relu(1 + D_k(Y)))],
       X_real = X_s or X_t (config.discriminator.real_input).
  4. EMA of the generator parameters (config.ema_decay).
  5. Guard: if any loss or gradient norm is not finite, nothing of the step is applied
     (params, batch stats, optimizer states, EMA keep their values), the step is
     counted in `nonfinite_count` (consecutive) and `nonfinite_total`; `step` still
     advances (the batch is consumed).

Cross-device averaging: each loss is `lax.pmean`'d over 'data' before it is
differentiated, so the gradient of the replicated parameters is the gradient of
the global-batch loss (JAX sums the per-device contributions when it transposes
the implicit broadcast of the replicated parameters). Batch-norm statistics are
averaged over 'data' inside the models (axis_name='data'), so the step on N
devices equals the step on one device with the whole batch. The replicated
outputs are checked by shard_map (check_vma).
"""

import dataclasses
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metrics as clu_metrics
from jax import lax
from jax.sharding import PartitionSpec as P

from fsjax.aei import losses
from fsjax.models import arcface
from fsjax.models import layers
from fsjax.train import parallel
from fsjax.train import step_utils

AXIS = parallel.DATA_AXIS


@flax.struct.dataclass
class TrainState:
  """Everything that changes during AEI-Net training (all replicated over 'data').

  Attributes:
    step: int32 [] steps taken (including skipped non-finite ones).
    g_params: generator (AEI-Net) parameters, float32.
    g_batch_stats: generator batch-norm statistics.
    d_params: discriminator parameters.
    d_batch_stats: discriminator batch-norm statistics ({} with instance norm).
    g_opt_state: optax state of the generator optimizer.
    d_opt_state: optax state of the discriminator optimizer.
    ema_params: exponential moving average of g_params.
    rng: uint32 [2] base PRNG key; step k uses fold_in(rng, k).
    nonfinite_count: int32 [] consecutive steps skipped for non-finite losses/grads.
    nonfinite_total: int32 [] all steps skipped so far.
  """
  step: jax.Array
  g_params: Any
  g_batch_stats: Any
  d_params: Any
  d_batch_stats: Any
  g_opt_state: Any
  d_opt_state: Any
  ema_params: Any
  rng: jax.Array
  nonfinite_count: jax.Array
  nonfinite_total: jax.Array


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  """Per-step means (over the global batch), averaged over the steps of a log interval.

  Losses of skipped (non-finite) steps are left out of the averages; `skipped` is the
  fraction of skipped steps in the interval.
  """
  g_loss: clu_metrics.Average
  g_adv: clu_metrics.Average
  g_att: clu_metrics.Average
  g_id: clu_metrics.Average
  g_rec: clu_metrics.Average
  d_loss: clu_metrics.Average
  d_real: clu_metrics.Average
  d_fake: clu_metrics.Average
  d_real_logit: clu_metrics.Average
  d_fake_logit: clu_metrics.Average
  g_grad_norm: clu_metrics.Average
  d_grad_norm: clu_metrics.Average
  same_fraction: clu_metrics.Average
  skipped: clu_metrics.Average


def metrics_to_host(metrics: 'TrainMetrics') -> dict[str, float]:
  """{name: float} of (host-fetched) TrainMetrics; NaN for a loss whose steps were all skipped."""
  host = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array)
                      and not x.is_fully_addressable else np.asarray(x), metrics)
  with np.errstate(invalid='ignore', divide='ignore'):
    return {k: float(v) for k, v in host.compute().items()}


@dataclasses.dataclass(frozen=True)
class Models:
  """The three networks of a step (unbound Flax modules; static, not in the state).

  Attributes:
    generator: AEI-Net, batch norm over axis 'data'.
    discriminator: multi-scale PatchGAN, batch norm (if any) over 'data'.
    identity: frozen ArcFace IResNet ([B, 112, 112, 3] in [-1, 1] -> [B, D]).
    crop_mode: identity_crop mode ('resize' | 'crop_19_237').
    id_normalize: G takes unit-norm z_id (config.model.id_normalize), else the raw embedding.
  """
  generator: nn.Module
  discriminator: nn.Module
  identity: nn.Module
  crop_mode: str
  id_normalize: bool = True


def build_models(config: ml_collections.ConfigDict, identity: nn.Module,
                 axis_name: str | None = AXIS) -> Models:
  """Generator and discriminator from the config, plus the given identity encoder.

  The identity module is cloned to the compute dtype config.model.dtype (its
  variables stay float32).
  """
  from fsjax import models as models_lib  # pylint: disable=g-import-not-at-top
  generator = models_lib.build_generator(config, axis_name=axis_name)
  discriminator = models_lib.build_discriminator(config, axis_name=axis_name)
  if hasattr(identity, 'dtype'):
    identity = identity.clone(dtype=layers.get_dtype(config.model.dtype))
  return Models(generator, discriminator, identity, config.identity.crop_mode,
                bool(config.model.id_normalize))


# ----------------------------------------------------------------------------
# Optimizers.


def make_schedule(opt_cfg: ml_collections.ConfigDict, learning_rate: float,
                  num_train_steps: int) -> optax.Schedule:
  """Learning rate per step: 'constant' or 'cosine' (to 0 at num_train_steps), with
  a linear warm-up of opt_cfg.warmup_steps from 0."""
  warmup = int(opt_cfg.warmup_steps)
  name = opt_cfg.schedule
  if name == 'constant':
    if warmup <= 0:
      return optax.constant_schedule(learning_rate)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, learning_rate, warmup),
         optax.constant_schedule(learning_rate)], [warmup])
  if name == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup_steps=warmup,
        decay_steps=max(int(num_train_steps), warmup + 1), end_value=0.0)
  raise ValueError(f"optimizer.schedule must be 'constant' or 'cosine', got {name!r}")


def make_optimizer(opt_cfg: ml_collections.ConfigDict, learning_rate: float,
                   num_train_steps: int) -> optax.GradientTransformation:
  """Adam (b1, b2 from the config; AdamW when weight_decay > 0), optional global-norm
  clipping (grad_clip_norm > 0), learning-rate schedule from `make_schedule`."""
  name = opt_cfg.name
  if name not in ('adam', 'adamw'):
    raise ValueError(f"optimizer.name must be 'adam' or 'adamw', got {name!r}")
  schedule = make_schedule(opt_cfg, learning_rate, num_train_steps)
  weight_decay = float(opt_cfg.weight_decay)
  if weight_decay > 0 or name == 'adamw':
    tx = optax.adamw(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, weight_decay=weight_decay)
  else:
    tx = optax.adam(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2)
  clip = float(opt_cfg.grad_clip_norm)
  if clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx


def make_optimizers(config: ml_collections.ConfigDict
                    ) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """(generator optimizer, discriminator optimizer) from config.optimizer."""
  opt = config.optimizer
  return (make_optimizer(opt, opt.g_learning_rate, config.num_train_steps),
          make_optimizer(opt, opt.d_learning_rate, config.num_train_steps))


# ----------------------------------------------------------------------------
# State.


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array, models: Models,
                       g_tx: optax.GradientTransformation,
                       d_tx: optax.GradientTransformation) -> TrainState:
  """Initialises G and D (eval-mode init, float32 params) and both optimizers.

  Pure and jittable (the trainer jits it with replicated out_shardings so every
  host builds the same state on the mesh directly).

  Args:
    config: uses image_size, model.id_dim.
    rng: PRNG key (raw uint32 [2] or typed).
    models: from `build_models`.
    g_tx, d_tx: from `make_optimizers`.
  Returns:
    TrainState at step 0 (ema_params = g_params).
  """
  rng = _raw_key(rng)
  init_rng, state_rng = jax.random.split(rng)
  # Initialisers draw their bits with XLA's RngBitGenerator ('unsafe_rbg' keys): the
  # threefry default makes XLA compile one hash per parameter, minutes on a CPU for the
  # paper model. The training RNG (state.rng) stays a default threefry key.
  init_key = jax.random.wrap_key_data(jnp.tile(init_rng, 2), impl='unsafe_rbg')
  g_rng, d_rng = jax.random.split(init_key)
  s = int(config.image_size)
  x = jnp.zeros((1, s, s, 3), jnp.float32)
  z = jnp.zeros((1, int(config.model.id_dim)), jnp.float32)
  g_vars = models.generator.init(g_rng, x, z, train=False)
  d_vars = models.discriminator.init(d_rng, x, train=False)
  g_params = g_vars['params']
  d_params = d_vars['params']
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      g_params=g_params,
      g_batch_stats=g_vars.get('batch_stats', {}),
      d_params=d_params,
      d_batch_stats=d_vars.get('batch_stats', {}),
      g_opt_state=g_tx.init(g_params),
      d_opt_state=d_tx.init(d_params),
      ema_params=jax.tree.map(jnp.copy, g_params),
      rng=state_rng,
      nonfinite_count=jnp.zeros((), jnp.int32),
      nonfinite_total=jnp.zeros((), jnp.int32))


def with_initial_weights(state: TrainState, weights: dict[str, Any],
                         g_tx: optax.GradientTransformation,
                         d_tx: optax.GradientTransformation) -> TrainState:
  """A step-0 `state` started from pretrained weights (fsjax/aei/init_from.py).

  `weights` holds 'g_params', 'ema_params' and any of 'g_batch_stats', 'd_params',
  'd_batch_stats' (missing ones keep the random init); the optimizer states start fresh on
  the new parameters. Pure and jittable.
  """
  fields = ('g_params', 'g_batch_stats', 'd_params', 'd_batch_stats', 'ema_params')
  new = state.replace(**{k: weights[k] for k in fields if k in weights})
  return new.replace(g_opt_state=g_tx.init(new.g_params), d_opt_state=d_tx.init(new.d_params))


def _raw_key(rng: jax.Array) -> jax.Array:
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(rng)
  return rng


# ----------------------------------------------------------------------------
# Identity (the frozen encoder; losses are in losses.py).


def identity_embedding(models: Models, id_vars: Any, x: jax.Array,
                       normalize: bool = True) -> jax.Array:
  """Identity embedding [B, D] (float32) of x [B, S, S, 3] in [-1, 1]; L2-normalised
  unless `normalize` is False (the raw encoder output).

  The encoder runs in inference mode (running batch-norm statistics); gradients flow
  to x (for L_id on Y), never to the encoder (its variables are not differentiated).
  """
  crop = arcface.identity_crop(x, models.crop_mode)
  emb = models.identity.apply(id_vars, crop, train=False).astype(jnp.float32)
  return _unit(emb) if normalize else emb


def _unit(emb: jax.Array) -> jax.Array:
  return emb * lax.rsqrt(jnp.maximum(jnp.sum(emb * emb, axis=-1, keepdims=True), 1e-12))


def _variables(params: Any, batch_stats: Any) -> dict[str, Any]:
  return {'params': params, 'batch_stats': batch_stats}


# ----------------------------------------------------------------------------
# The step.


def train_step(state: TrainState, batch: dict[str, jax.Array], id_vars: Any, *,
               config: ml_collections.ConfigDict, models: Models,
               g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation
               ) -> tuple[TrainState, TrainMetrics]:
  """One generator update, then one discriminator update, on one device's batch slice.

  Must run inside shard_map over axis 'data' (see `make_train_step`).

  Args:
    state: replicated TrainState.
    batch: this device's rows: 'source' and 'target' uint8 [b, S, S, 3] (0-255) or
      float [-1, 1]; 'same' float32 [b] (1.0 where X_t shows X_s's identity).
    id_vars: replicated identity-encoder variables {'params', 'batch_stats'} (frozen).
    config: loss weights (config.loss), config.discriminator.real_input, config.ema_decay.
    models: networks (`build_models`).
    g_tx, d_tx: optimizers (`make_optimizers`).
  Returns:
    (new state, TrainMetrics of this step; replicated).
  """
  loss_cfg = config.loss
  gen, disc = models.generator, models.discriminator
  step_key = jax.random.fold_in(state.rng, state.step)
  device_key = jax.random.fold_in(step_key, lax.axis_index(AXIS))
  g_key, d_key = jax.random.split(device_key)

  x_s = step_utils.to_float_images(batch['source'])
  x_t = step_utils.to_float_images(batch['target'])
  same = batch['same'].astype(jnp.float32)
  num_devices = lax.axis_size(AXIS)
  # Rows with X_s ~ X_t over the whole global batch (data only, no gradient).
  num_same = lax.psum(jnp.sum(same), AXIS)
  e_s = lax.stop_gradient(identity_embedding(models, id_vars, x_s, normalize=False))
  u_s = _unit(e_s)  # L_id's side of X_s
  z_s = u_s if models.id_normalize else e_s  # G's input

  d_vars = _variables(state.d_params, state.d_batch_stats)

  # ---- generator ----
  def g_loss_fn(g_params):
    (y, z_att_t), upd = gen.apply(_variables(g_params, state.g_batch_stats), x_t, z_s,
                                  train=True, mutable=['batch_stats'], rngs={'dropout': g_key})
    z_att_y, upd = gen.apply(_variables(g_params, upd['batch_stats']), y, train=True,
                             method='attributes', mutable=['batch_stats'])
    fake_logits, _ = disc.apply(d_vars, y, train=True, mutable=['batch_stats'])
    adv = losses.generator_adv_loss(fake_logits, loss_cfg.adv_g)
    att = losses.attribute_loss(z_att_y, z_att_t, config.model.attr_full_res_channels,
                                loss_cfg.att_full_res)
    y_id = y if not loss_cfg.id_jitter else losses.jitter_images(
        jax.random.fold_in(g_key, 1), y, loss_cfg.id_jitter)
    idl = losses.identity_loss(identity_embedding(models, id_vars, y_id), u_s)
    # Local share of the global same-pair mean: pmean over devices restores it exactly.
    rec = jnp.sum(losses.reconstruction_terms(y, x_t, same)) * num_devices / jnp.maximum(num_same, 1.0)
    total = (loss_cfg.adv * adv + loss_cfg.att * att + loss_cfg.id * idl
             + loss_cfg.rec * rec)
    terms = lax.pmean({'g_loss': total, 'g_adv': adv, 'g_att': att, 'g_id': idl,
                       'g_rec': rec}, AXIS)
    return terms['g_loss'], (terms, y, upd['batch_stats'])

  (_, (g_terms, y, new_g_stats)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
      state.g_params)
  g_updates, new_g_opt = g_tx.update(g_grads, state.g_opt_state, state.g_params)
  new_g_params = optax.apply_updates(state.g_params, g_updates)

  # ---- discriminator ----
  if config.discriminator.real_input == 'source':
    x_real = x_s
  elif config.discriminator.real_input == 'target':
    x_real = x_t
  else:
    raise ValueError("discriminator.real_input must be 'source' or 'target'")
  y_fake = lax.stop_gradient(y)

  def d_loss_fn(d_params):
    real_logits, upd = disc.apply(_variables(d_params, state.d_batch_stats), x_real,
                                  train=True, mutable=['batch_stats'], rngs={'dropout': d_key})
    fake_logits, upd = disc.apply(_variables(d_params, upd['batch_stats']), y_fake,
                                  train=True, mutable=['batch_stats'])
    real, fake = losses.hinge_d_terms(real_logits, fake_logits)
    terms = lax.pmean({'d_loss': 0.5 * (real + fake), 'd_real': real, 'd_fake': fake,
                       'd_real_logit': losses.mean_logit(real_logits),
                       'd_fake_logit': losses.mean_logit(fake_logits)}, AXIS)
    return terms['d_loss'], (terms, upd.get('batch_stats', {}))

  (_, (d_terms, new_d_stats)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
      state.d_params)
  d_updates, new_d_opt = d_tx.update(d_grads, state.d_opt_state, state.d_params)
  new_d_params = optax.apply_updates(state.d_params, d_updates)

  decay = float(config.ema_decay)
  new_ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params,
                         new_g_params)

  # ---- non-finite guard: apply all or nothing ----
  g_norm = optax.global_norm(g_grads)
  d_norm = optax.global_norm(d_grads)
  ok = step_utils.all_finite(g_terms, d_terms, g_norm, d_norm)

  def pick(new, old):
    return step_utils.select_if(ok, new, old)

  new_state = state.replace(
      step=state.step + 1,
      g_params=pick(new_g_params, state.g_params),
      g_batch_stats=pick(new_g_stats, state.g_batch_stats),
      d_params=pick(new_d_params, state.d_params),
      d_batch_stats=pick(new_d_stats, state.d_batch_stats),
      g_opt_state=pick(new_g_opt, state.g_opt_state),
      d_opt_state=pick(new_d_opt, state.d_opt_state),
      ema_params=pick(new_ema, state.ema_params),
      nonfinite_count=jnp.where(ok, 0, state.nonfinite_count + 1).astype(jnp.int32),
      nonfinite_total=state.nonfinite_total + (~ok).astype(jnp.int32))

  values = dict(g_terms, **d_terms, g_grad_norm=g_norm, d_grad_norm=d_norm,
                same_fraction=num_same / (same.shape[0] * num_devices))
  return new_state, TrainMetrics.empty().replace(**step_utils.guarded_averages(ok, values))


def make_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, models: Models,
                    g_tx: optax.GradientTransformation | None = None,
                    d_tx: optax.GradientTransformation | None = None,
                    donate: bool = True) -> Callable[..., tuple[TrainState, TrainMetrics]]:
  """Compiles `train_step` over `mesh`: jit(shard_map(step, in_specs=(P(), P('data'), P()))).

  Args:
    config: the training config.
    mesh: 1-D 'data' mesh (`parallel.make_mesh()`; any device count).
    models: from `build_models` (batch norm over 'data').
    g_tx, d_tx: optimizers (default `make_optimizers(config)`; must be the ones the
      state was created with).
    donate: donate the state's buffers to the new state.
  Returns:
    step(state, batch, id_vars) -> (state, TrainMetrics); `state` and `id_vars`
    replicated on `mesh` (`parallel.replicate`), `batch` from `parallel.shard_batch`
    (global batch [per_device_batch_size * mesh size, S, S, 3]).
  """
  if g_tx is None or d_tx is None:
    g_tx, d_tx = make_optimizers(config)
  fn = lambda state, batch, id_vars: train_step(  # pylint: disable=g-long-lambda
      state, batch, id_vars, config=config, models=models, g_tx=g_tx, d_tx=d_tx)
  return parallel.data_parallel(fn, mesh, in_specs=(P(), P(AXIS), P()), out_specs=(P(), P()),
                                donate_argnums=(0,) if donate else ())


def make_sample_fn(models: Models) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """Jitted sample(state, x_s, x_t, id_vars) -> (Y, Y_ema), both [B, S, S, 3] in [-1, 1].

  The generator runs in inference mode (running batch-norm statistics), with the
  current and the EMA parameters. Inputs are replicated (small sample batch).
  """

  def sample(state, x_s, x_t, id_vars):
    x_s, x_t = step_utils.to_float_images(x_s), step_utils.to_float_images(x_t)
    z_s = identity_embedding(models, id_vars, x_s, normalize=models.id_normalize)
    y, _ = models.generator.apply(_variables(state.g_params, state.g_batch_stats), x_t, z_s,
                                  train=False)
    y_ema, _ = models.generator.apply(_variables(state.ema_params, state.g_batch_stats), x_t,
                                      z_s, train=False)
    return y.astype(jnp.float32), y_ema.astype(jnp.float32)

  return jax.jit(sample)
