"""ArcFace training math: margin loss, (sharded) class matrix, optimizer, step, verification.

Pure functions only; the loop (data, checkpoints, logs, export) is fsjax/arcface_trainer.py.

Loss (arcface_torch `ArcFace`, s = 64, m = 0.5). With unit embeddings e and unit class
vectors w_c (the columns of the class matrix W [D, C]), cos_c = <e, w_c>; the target
logit cos_y becomes

  cos(theta_y + m) = cos_y cos m - sin_y sin m      where cos_y > cos(pi - m)
  cos_y - m sin(pi - m)                             otherwise (keeps it monotonic)

(`easy_margin`: cos(theta_y + m) where cos_y > 0, cos_y otherwise); logits = s * cos and
the loss is softmax cross-entropy averaged over the global batch.

Class matrix placement (config.fc.shard = 'auto' | 'always' | 'never'):
  * replicated: every device holds W [D, C], computes the logits of its own rows and the
    loss is pmean'd (plain data parallelism, like the backbone);
  * sharded over 'data' along classes (partial-FC layout, model-parallel FC): device k
    holds W[:, k*C_l:(k+1)*C_l] (C padded to a multiple of the device count; padded
    classes are masked out); the embeddings and labels of the whole global batch are
    all-gathered, each device computes [B_global, C_l] logits, and the softmax
    normaliser comes from lax.pmax (max) and lax.psum (sum of exp, target logit). The
    loss is identical on every device and the gradients are exact (the all-gather
    transposes to a reduce-scatter). 'auto' shards when C >= fc.shard_min_classes.
  * partial FC sampling (fc.sample_rate < 1, sharded only): per step each device keeps
    the classes of its shard that occur in the global batch plus random others, up to
    ceil(sample_rate * C_l) columns, and computes the softmax over those only (Partial
    FC, An et al. 2021: ~0.1 for millions of identities). Implemented; the optimizer
    still steps every column (momentum and weight decay continue for unsampled ones,
    unlike arcface_torch which only updates sampled rows).

The backbone is data parallel: parameters replicated, BatchNorm statistics pmean'd over
'data' (IResNet axis_name='data'), gradients summed over devices by shard_map's
transpose of the replicated parameters (the loss is a global mean, so this is the
global-batch gradient).

Optimizer (config.optimizer): 'sgd' (momentum 0.9, weight decay 5e-4 added to the
gradient like torch.optim.SGD, arcface_torch's PolyScheduler: linear warm-up then
lr * (1 - t)^2) or 'adamw'; global-norm clipping of the backbone gradient
(arcface_torch: 5). The backbone and the class matrix have separate optimizer states
(the class matrix's may be sharded).

Identity-parameter regression (config.loss.identity_params = weight w > 0; an fsjax option for
synthetic data, not arcface_torch's): a linear head on the unit embedding predicts the
renderer's standardised identity parameters t [B, P] of each image (batch 'targets'), and the
loss becomes L_arcface + w * mean((head(e) - t)^2) (metrics: 'loss' is L_arcface,
'target_loss' the regression). It asks the embedding to carry the face's geometry linearly
(eyes, nose, mouth), as a real ArcFace trained on millions of identities does and a
3000-identity one does not; on the tiny synthetic IResNet it raises verification and the skin
tone's read-out but not the geometry's (docs/fidelity.md "What the figures reward"). The head
sits in `fc` ('targets_kernel' [D, P], 'targets_bias' [P], replicated) and is not exported.
"""


import math
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metrics as clu_metrics
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from fsjax.train import parallel
from fsjax.train import step_utils
from fsjax.models import arcface

AXIS = parallel.DATA_AXIS
_MASKED = -1e9  # logit of padded / absent classes (finite: no inf - inf NaNs)


# ----------------------------------------------------------------------------
# Margin loss (single device reference and building block).


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along `axis` (float32)."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


def arcface_target_logit(cos: jax.Array, margin: float, easy_margin: bool = False) -> jax.Array:
  """The margin-penalised target cosine (arcface_torch `ArcFace`), elementwise.

  Args:
    cos: cosines of the target class, any shape, in [-1, 1].
    margin: additive angular margin m (radians, 0.5; float or traced scalar).
    easy_margin: cos(theta + m) only where cos > 0 (else cos unchanged); default uses
      the threshold cos > cos(pi - m), else cos - m sin(pi - m).
  Returns:
    Same shape as `cos`.
  """
  cos = cos.astype(jnp.float32)
  sin = jnp.sqrt(jnp.clip(1.0 - cos * cos, 1e-12, 1.0))
  margin = jnp.asarray(margin, jnp.float32)  # may be traced (margin warm-up)
  cos_m = cos * jnp.cos(margin) - sin * jnp.sin(margin)
  if easy_margin:
    return jnp.where(cos > 0, cos_m, cos)
  return jnp.where(cos > jnp.cos(math.pi - margin), cos_m,
                   cos - jnp.sin(math.pi - margin) * margin)


def margin_logits(cos: jax.Array, labels: jax.Array, *, scale: float, margin: float,
                  easy_margin: bool = False) -> jax.Array:
  """ArcFace logits s * cos with the target column margin-penalised.

  Args:
    cos: [B, C] cosines between unit embeddings and unit class vectors.
    labels: int [B] target column in [0, C), or -1 (row has no target here: unchanged).
    scale: s (64).
    margin: m (0.5).
    easy_margin: see `arcface_target_logit`.
  Returns:
    [B, C] float32 logits.
  """
  cos = cos.astype(jnp.float32)
  onehot = jax.nn.one_hot(labels, cos.shape[-1], dtype=jnp.bool_)  # -1 -> all False
  target = arcface_target_logit(cos, margin, easy_margin)
  return scale * jnp.where(onehot, target, cos)


def arcface_loss(embeddings: jax.Array, labels: jax.Array, kernel: jax.Array, *,
                 scale: float = 64.0, margin: float = 0.5,
                 easy_margin: bool = False) -> tuple[jax.Array, jax.Array]:
  """Single-device ArcFace loss (the reference the sharded version must match).

  Args:
    embeddings: [B, D] backbone outputs (normalised here).
    labels: int [B] in [0, C).
    kernel: [D, C] class matrix (columns normalised here).
    scale, margin, easy_margin: see `margin_logits`.
  Returns:
    (mean cross-entropy [], accuracy [] of argmax of the plain cosines).
  """
  cos = l2_normalize(embeddings) @ l2_normalize(kernel, axis=0)
  logits = margin_logits(cos, labels, scale=scale, margin=margin, easy_margin=easy_margin)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  acc = jnp.mean((jnp.argmax(cos, -1) == labels).astype(jnp.float32))
  return loss, acc


def sharded_arcface_loss(embeddings: jax.Array, labels: jax.Array, kernel_shard: jax.Array, *,
                         num_classes: int, scale: float = 64.0, margin: float = 0.5,
                         easy_margin: bool = False, sample_rate: float = 1.0,
                         rng: jax.Array | None = None, axis_name: str = AXIS
                         ) -> tuple[jax.Array, jax.Array]:
  """ArcFace loss with the class matrix split along classes over `axis_name`.

  Runs per device inside shard_map. Equals `arcface_loss` on the concatenated global
  batch and the full matrix (sample_rate = 1).

  Args:
    embeddings: [b, D] this device's rows.
    labels: int [b] global class ids in [0, num_classes).
    kernel_shard: [D, C_l] this device's columns (global classes k*C_l ... (k+1)*C_l - 1);
      C_l * axis_size >= num_classes (columns >= num_classes are padding, masked).
    num_classes: real number of classes C.
    scale, margin, easy_margin: see `margin_logits`.
    sample_rate: partial FC: keep ceil(rate * C_l) columns per device per step (the
      batch's classes first, then random ones); 1.0 = all.
    rng: PRNG key for the sampling (same on every device; folded with the device index).
    axis_name: mapped mesh axis.
  Returns:
    (mean cross-entropy over the global batch [], accuracy []), identical on every
    device (accuracy is over all C_l columns, without sampling).
  """
  local_classes = kernel_shard.shape[1]
  shard = lax.axis_index(axis_name)
  all_emb = lax.all_gather(l2_normalize(embeddings), axis_name, tiled=True)  # [B, D]
  all_labels = lax.all_gather(labels, axis_name, tiled=True)  # [B]
  offset = shard * local_classes
  local = all_labels - offset
  here = (local >= 0) & (local < local_classes)
  local = jnp.where(here, local, -1)
  column = offset + jnp.arange(local_classes)
  valid = column < num_classes  # padding columns

  w = l2_normalize(kernel_shard, axis=0)
  cos_all = all_emb @ w  # [B, C_l]
  cos_all = jnp.where(valid[None], cos_all, -2.0)

  # Accuracy over every column (no margin, no sampling; pmax has no derivative).
  cos_ng = lax.stop_gradient(cos_all)
  best = lax.pmax(jnp.max(cos_ng, axis=-1), axis_name)
  target_cos = lax.psum(jnp.sum(jnp.where(jax.nn.one_hot(local, local_classes, dtype=bool),
                                          cos_ng, 0.0), axis=-1), axis_name)
  acc = jnp.mean((target_cos >= best).astype(jnp.float32))

  if sample_rate < 1.0:
    num_sample = max(1, min(local_classes, int(math.ceil(sample_rate * local_classes))))
    key = jax.random.fold_in(rng if rng is not None else jax.random.PRNGKey(0), shard)
    score = jax.random.uniform(key, (local_classes,))
    positive = jnp.zeros((local_classes,), bool).at[jnp.where(here, local, local_classes)].set(
        True, mode='drop')
    score = jnp.where(positive, 2.0, jnp.where(valid, score, -1.0))
    _, keep = lax.top_k(score, num_sample)  # [num_sample]
    inverse = jnp.full((local_classes,), -1, jnp.int32).at[keep].set(
        jnp.arange(num_sample, dtype=jnp.int32))
    local = jnp.where(here, inverse[jnp.maximum(local, 0)], -1)
    cos = all_emb @ w[:, keep]
    valid = valid[keep]
    cos = jnp.where(valid[None], cos, -2.0)
  else:
    cos = cos_all

  logits = margin_logits(cos, local, scale=scale, margin=margin, easy_margin=easy_margin)
  logits = jnp.where(valid[None], logits, _MASKED)
  row_max = lax.pmax(jnp.max(lax.stop_gradient(logits), axis=-1), axis_name)
  sum_exp = lax.psum(jnp.sum(jnp.exp(logits - row_max[:, None]), axis=-1), axis_name)
  onehot = jax.nn.one_hot(local, logits.shape[-1], dtype=logits.dtype)
  target = lax.psum(jnp.sum(onehot * logits, axis=-1), axis_name)
  loss = jnp.mean(jnp.log(sum_exp) + row_max - target)
  return loss, acc


def margin_at(step: jax.Array, loss_cfg: ml_collections.ConfigDict) -> jax.Array:
  """Margin at `step`: loss.margin, ramped linearly from 0 over loss.margin_warmup_steps."""
  margin = float(loss_cfg.margin)
  warmup = int(loss_cfg.margin_warmup_steps)
  if warmup <= 0:
    return jnp.asarray(margin, jnp.float32)
  return margin * jnp.minimum(1.0, step.astype(jnp.float32) / warmup)


# ----------------------------------------------------------------------------
# Models, optimizer, state.


def build_backbone(config: ml_collections.ConfigDict, axis_name: str | None = AXIS
                   ) -> arcface.IResNet:
  """IResNet from config.model (arch name, optionally overridden by layers/width/embedding_dim;
  stem_stride)."""
  m = config.model
  overrides = {'bn_eps': float(m.bn_eps), 'dtype': m.dtype,
               'stem_stride': int(m.stem_stride), 'axis_name': axis_name}
  for key in ('layers', 'width', 'embedding_dim'):
    value = m.get(key, None)
    if value:
      overrides[key] = tuple(value) if key == 'layers' else int(value)
  return arcface.iresnet(m.arch, **overrides)


def use_sharded_fc(config: ml_collections.ConfigDict, num_classes: int) -> bool:
  """Whether the class matrix is split over devices: config.fc.shard 'always', 'never' or
  'auto' (from fc.shard_min_classes classes)."""
  shard = config.fc.shard
  if shard == 'auto':
    return num_classes >= int(config.fc.shard_min_classes)
  if shard in ('always', 'never'):
    return shard == 'always'
  raise ValueError(f"fc.shard must be 'auto', 'always' or 'never', got {shard!r}")


def padded_classes(num_classes: int, num_devices: int, sharded: bool) -> int:
  """Columns of the class matrix: C rounded up to a multiple of the devices when sharded."""
  if not sharded:
    return int(num_classes)
  return int(math.ceil(num_classes / num_devices) * num_devices)


def make_schedule(opt_cfg: ml_collections.ConfigDict, num_train_steps: int) -> optax.Schedule:
  """'poly' (arcface_torch PolyScheduler: linear warm-up from 0, then lr (1 - t)^power to 0),
  'cosine' or 'constant', each after optimizer.warmup_steps of linear warm-up."""
  lr = float(opt_cfg.learning_rate)
  warmup = int(opt_cfg.warmup_steps)
  decay_steps = max(int(num_train_steps) - warmup, 1)
  name = opt_cfg.schedule
  if name == 'poly':
    main = optax.polynomial_schedule(lr, 0.0, float(opt_cfg.poly_power), decay_steps)
  elif name == 'cosine':
    main = optax.cosine_decay_schedule(lr, decay_steps)
  elif name == 'constant':
    main = optax.constant_schedule(lr)
  else:
    raise ValueError(f"optimizer.schedule must be 'poly', 'cosine' or 'constant', got {name!r}")
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(config: ml_collections.ConfigDict, clip: bool = True
                   ) -> optax.GradientTransformation:
  """config.optimizer: 'sgd' (momentum, L2 weight decay added to the gradient) or 'adamw';
  global-norm clipping (optimizer.grad_clip_norm > 0) when `clip`."""
  opt = config.optimizer
  schedule = make_schedule(opt, config.num_train_steps)
  wd = float(opt.weight_decay)
  name = opt.name
  if name == 'sgd':
    parts = [optax.add_decayed_weights(wd)] if wd > 0 else []
    parts.append(optax.sgd(schedule, momentum=float(opt.momentum) or None))
    tx = optax.chain(*parts)
  elif name == 'adamw':
    tx = optax.adamw(schedule, b1=float(opt.b1), b2=float(opt.b2),
                     weight_decay=wd)
  else:
    raise ValueError(f"optimizer.name must be 'sgd' or 'adamw', got {name!r}")
  max_norm = float(opt.grad_clip_norm)
  if clip and max_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(max_norm), tx)
  return tx


@flax.struct.dataclass
class TrainState:
  """ArcFace training state.

  Attributes:
    step: int32 [] steps taken.
    params: IResNet parameters (replicated).
    batch_stats: IResNet BatchNorm statistics (replicated).
    fc: {'kernel': float32 [D, C_pad]} class matrix (sharded along C or replicated), plus
      'targets_kernel' [D, P] / 'targets_bias' [P] (replicated) with the regression head.
    opt_state: optimizer state of `params`.
    fc_opt_state: optimizer state of `fc` (laid out like `fc`).
    rng: PRNG key data uint32 [2] (partial-FC sampling).
    nonfinite_count: int32 [] consecutive skipped (non-finite) steps.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  fc: Any
  opt_state: Any
  fc_opt_state: Any
  rng: jax.Array
  nonfinite_count: jax.Array


@flax.struct.dataclass
class Setup:
  """Static pieces of a run: backbone module, optimizers, class counts."""
  backbone: Any = flax.struct.field(pytree_node=False)
  tx: Any = flax.struct.field(pytree_node=False)
  fc_tx: Any = flax.struct.field(pytree_node=False)
  num_classes: int = flax.struct.field(pytree_node=False)
  padded_classes: int = flax.struct.field(pytree_node=False)
  sharded: bool = flax.struct.field(pytree_node=False)
  num_targets: int = flax.struct.field(pytree_node=False, default=0)  # P; 0 = no regression head


def make_setup(config: ml_collections.ConfigDict, num_classes: int, num_devices: int,
               num_targets: int = 0) -> Setup:
  """Backbone (BatchNorm over 'data'), optimizers and class-matrix layout of a run;
  `num_targets` P > 0 adds the identity-parameter head (needs loss.identity_params > 0)."""
  sharded = use_sharded_fc(config, num_classes)
  if config.fc.sample_rate < 1.0 and not sharded:
    raise ValueError('fc.sample_rate < 1 (partial FC) needs the sharded class matrix '
                     '(fc.shard=\'always\')')
  if (num_targets > 0) != (float(config.loss.identity_params) > 0):
    raise ValueError(f'{num_targets} regression targets with loss.identity_params='
                     f'{config.loss.identity_params}: give both or neither')
  return Setup(backbone=build_backbone(config, AXIS), tx=make_optimizer(config, clip=True),
               fc_tx=make_optimizer(config, clip=False), num_classes=int(num_classes),
               padded_classes=padded_classes(num_classes, num_devices, sharded),
               sharded=sharded, num_targets=int(num_targets))


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array,
                       setup: Setup) -> TrainState:
  """Fresh state (pure, jittable): IResNet init (eval mode), class matrix ~ N(0, fc.init_std)."""
  k_model, k_fc, k_state = jax.random.split(rng, 3)
  plain = build_backbone(config, axis_name=None)
  x = jnp.zeros((1, arcface.INPUT_SIZE, arcface.INPUT_SIZE, 3), jnp.float32)
  variables = plain.init(k_model, x, train=False)
  dim = plain.embedding_dim
  kernel = float(config.fc.init_std) * jax.random.normal(
      k_fc, (dim, setup.padded_classes), jnp.float32)
  fc = {'kernel': kernel}
  if setup.num_targets:
    fc['targets_kernel'] = jnp.zeros((dim, setup.num_targets), jnp.float32)
    fc['targets_bias'] = jnp.zeros((setup.num_targets,), jnp.float32)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables['batch_stats'], fc=fc,
                    opt_state=setup.tx.init(params), fc_opt_state=setup.fc_tx.init(fc),
                    rng=jax.random.key_data(k_state), nonfinite_count=jnp.zeros((), jnp.int32))


def state_specs(state_shapes: TrainState, setup: Setup) -> TrainState:
  """PartitionSpec of every state leaf: P() except the class matrix (and its optimizer
  slots, keyed 'kernel' like it) -> P(None, 'data') when sharded."""
  fc_shape = tuple(state_shapes.fc['kernel'].shape)

  def fc_spec(path, x):
    is_kernel = path and path[-1] == jax.tree_util.DictKey('kernel')
    if setup.sharded and is_kernel and tuple(np.shape(x)) == fc_shape:
      return P(None, AXIS)
    return P()

  specs = jax.tree.map(lambda _: P(), state_shapes)
  return specs.replace(fc=jax.tree_util.tree_map_with_path(fc_spec, state_shapes.fc),
                       fc_opt_state=jax.tree_util.tree_map_with_path(
                           fc_spec, state_shapes.fc_opt_state))


def state_shardings(state_shapes: TrainState, setup: Setup, mesh) -> TrainState:
  """NamedShardings matching `state_specs`."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s), state_specs(state_shapes, setup),
                      is_leaf=lambda x: isinstance(x, P))


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  """Averaged over the steps between two logs (replicated)."""
  loss: clu_metrics.Average
  accuracy: clu_metrics.Average
  grad_norm: clu_metrics.Average
  lr: clu_metrics.Average
  margin: clu_metrics.Average
  target_loss: clu_metrics.Average  # identity-parameter regression (0 without the head)
  skipped: clu_metrics.Average


def train_step(state: TrainState, batch: dict[str, jax.Array], *,
               config: ml_collections.ConfigDict, setup: Setup
               ) -> tuple[TrainState, TrainMetrics]:
  """One SGD/AdamW step on this device's rows (inside shard_map over 'data').

  Args:
    state: TrainState laid out as `state_specs` says (fc is this device's block when sharded).
    batch: 'image' uint8 [b, 112, 112, 3] (or float [-1, 1]); 'label' int32 [b] in [0, C);
      with the regression head 'targets' float32 [b, P] (standardised).
    config: config.loss (scale, margin, easy_margin, margin_warmup_steps, identity_params),
      config.fc.
    setup: `make_setup`.
  Returns:
    (new state, TrainMetrics of this step; replicated).
  """
  loss_cfg = config.loss
  x = step_utils.to_float_images(batch['image'])
  labels = batch['label'].astype(jnp.int32)
  margin = margin_at(state.step, loss_cfg)
  scale = float(loss_cfg.scale)
  easy = bool(loss_cfg.easy_margin)
  sample_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_fn(params, fc):
    emb, upd = setup.backbone.apply({'params': params, 'batch_stats': state.batch_stats}, x,
                                    train=True, mutable=['batch_stats'])
    if setup.sharded:
      loss, acc = sharded_arcface_loss(
          emb, labels, fc['kernel'], num_classes=setup.num_classes, scale=scale,
          margin=margin, easy_margin=easy, sample_rate=float(config.fc.sample_rate),
          rng=jax.random.key_data(sample_key))
    else:
      loss, acc = arcface_loss(emb, labels, fc['kernel'], scale=scale, margin=margin,
                               easy_margin=easy)
      loss, acc = lax.pmean((loss, acc), AXIS)
    target_loss = jnp.zeros((), jnp.float32)
    if setup.num_targets:
      pred = l2_normalize(emb) @ fc['targets_kernel'] + fc['targets_bias']
      target_loss = lax.pmean(jnp.mean(jnp.square(pred - batch['targets'])), AXIS)
    total = loss + float(loss_cfg.identity_params) * target_loss
    return total, (loss, acc, target_loss, upd['batch_stats'])

  (_, (loss, acc, target_loss, new_stats)), (grads, fc_grads) = jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True)(state.params, state.fc)
  updates, new_opt = setup.tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  fc_updates, new_fc_opt = setup.fc_tx.update(fc_grads, state.fc_opt_state, state.fc)
  new_fc = optax.apply_updates(state.fc, fc_updates)

  grad_norm = optax.global_norm(grads)
  fc_sq = jnp.sum(jnp.square(fc_grads['kernel']))
  ok = step_utils.all_finite(loss, target_loss, grad_norm,
                             lax.psum(fc_sq, AXIS) if setup.sharded else fc_sq)

  def pick(new, old):
    return step_utils.select_if(ok, new, old)

  new_state = state.replace(
      step=state.step + 1, params=pick(new_params, state.params),
      batch_stats=pick(new_stats, state.batch_stats), fc=pick(new_fc, state.fc),
      opt_state=pick(new_opt, state.opt_state), fc_opt_state=pick(new_fc_opt, state.fc_opt_state),
      nonfinite_count=jnp.where(ok, 0, state.nonfinite_count + 1).astype(jnp.int32))
  lr = make_schedule(config.optimizer, config.num_train_steps)(state.step)
  fields = step_utils.guarded_averages(ok, {'loss': loss, 'accuracy': acc,
                                             'grad_norm': grad_norm,
                                             'target_loss': target_loss})
  one = jnp.ones((), jnp.int32)
  fields['lr'] = clu_metrics.Average(total=jnp.asarray(lr, jnp.float32), count=one)
  fields['margin'] = clu_metrics.Average(total=margin, count=one)
  return new_state, TrainMetrics.empty().replace(**fields)


def make_train_step(config: ml_collections.ConfigDict, mesh, setup: Setup,
                    state_shapes: TrainState, donate: bool = True
                    ) -> Callable[..., tuple[TrainState, TrainMetrics]]:
  """Compiles `train_step` over `mesh` (parallel.data_parallel).

  Returns:
    step(state, batch) -> (state, TrainMetrics); `state` laid out by `state_shardings`,
    `batch` from `parallel.shard_batch` (global [per_device_batch_size * devices, ...]).
  """
  specs = state_specs(state_shapes, setup)
  fn = lambda state, batch: train_step(state, batch, config=config, setup=setup)
  return parallel.data_parallel(fn, mesh, in_specs=(specs, P(AXIS)), out_specs=(specs, P()),
                                donate_argnums=(0,) if donate else ())


def make_embed_fn(config: ml_collections.ConfigDict, flip: bool = True
                  ) -> Callable[[Any, jax.Array], jax.Array]:
  """Jitted embed(variables, images uint8 [B, 112, 112, 3]) -> [B, D] unit embeddings
  (inference-mode BatchNorm; with `flip` the sum of the image's and its mirror's
  embeddings, the usual verification protocol)."""
  module = build_backbone(config, axis_name=None)

  def embed(variables, images):
    x = step_utils.to_float_images(images)
    e = l2_normalize(module.apply(variables, x, train=False))
    if flip:
      e = e + l2_normalize(module.apply(variables, x[:, :, ::-1], train=False))
    return l2_normalize(e)

  return jax.jit(embed)
