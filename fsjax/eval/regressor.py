"""Pose and expression of synthetic faces from pixels: the synthetic protocol's stand-in for
Hopenet (head pose) and 3DMM fitting (expression), which only work on real faces.

`train` fits fsjax.models.attribute_regressor.AttributeRegressor to the renderer's own
parameters on the train identities of a synthetic_faces config (config.dataset, default
synthetic_faces/64) and measures it on the held-out test identities (`evaluate`):

- pose: yaw, pitch, roll of the renderer's head rotation, in degrees (the renderer samples
  them uniformly in +-34.4 / +-17.2 / +-14.3 degrees); `pose_error` is the mean L2 of the
  three angles, as in fsjax.eval.metrics.pose_error;
- expression: the renderer's expression parameters `EXPRESSION_FIELDS` in their own units
  (mouth_open [0, 1], 0 in 55% of faces; smile [-0.4, 1]; blink [0, 1], 0 in 85%);
  `expression_error` is their mean L2 distance. The renderer's other two expression
  parameters are left out because a 64 px face does not show them: gaze moves the iris
  by at most ~1 px and brow_raise the brows by ~1 px (a first regressor trained on them
  stayed at chance, mean |error| 0.52 on gaze in [-1, 1]).

The network regresses the targets standardised by their train-set mean and std (stored
with the weights), with a mean squared error, AdamW and a cosine schedule; half the
training images are mirrored (yaw and roll change sign, the rest does not). Inputs
of another size are area-resized to config.image_size first, so one estimator serves the
pairs at 64, 128 and 256 px.

A trained estimator is a folder: meta.json (config, target statistics, held-out errors)
and params.npz (the weights, one array per '/'-joined parameter path; no pickles).
"""

import json
import os
import time
from typing import Any, Callable, Mapping, Optional

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util

from fsjax.data import synthetic_faces
from fsjax.eval import metrics
from fsjax.models import attribute_regressor

POSE_FIELDS = ('yaw', 'pitch', 'roll')
EXPRESSION_FIELDS = ('mouth_open', 'smile', 'blink')
TARGET_FIELDS = POSE_FIELDS + EXPRESSION_FIELDS
FLIP_SIGN = np.array([-1.0, 1.0, -1.0, 1.0, 1.0, 1.0])  # a mirrored face: -yaw, -roll
META_FILE = 'meta.json'
PARAMS_FILE = 'params.npz'
_BATCH = 64  # inference batch (padded), one compiled shape

Log = Callable[[str], None]


def targets_from_attributes(attributes: np.ndarray) -> np.ndarray:
  """float64 [N, 6]: (yaw, pitch, roll) in degrees, then EXPRESSION_FIELDS, from renderer
  attribute vectors [N, ATTRIBUTE_DIM]."""
  att = np.asarray(attributes, np.float64).reshape(-1, synthetic_faces.ATTRIBUTE_DIM)
  cols = [synthetic_faces.ATTRIBUTE_FIELDS.index(f) for f in TARGET_FIELDS]
  out = att[:, cols]
  out[:, :3] = np.degrees(out[:, :3])
  return out


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 [N, S, S, 3] -> [N, size, size, 3] (cv2 area / linear); a no-op at S = size."""
  images = np.asarray(images, np.uint8)
  if images.shape[1] == size and images.shape[2] == size:
    return images
  interp = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_LINEAR
  return np.stack([cv2.resize(im, (size, size), interpolation=interp) for im in images])


def build_module(model: Mapping[str, Any]) -> attribute_regressor.AttributeRegressor:
  """The network of a config.model block (or the 'model' entry of meta.json)."""
  return attribute_regressor.AttributeRegressor(widths=tuple(model['widths']),
                                                dense=int(model['dense']),
                                                num_outputs=len(TARGET_FIELDS))


class AttributeEstimator:
  """A trained regressor: `predict(images)` -> (pose degrees [N, 3], expression [N, 6]).

  Attributes:
    meta: meta.json content ('held_out' holds its own errors on unseen identities).
    image_size: the resolution it runs at (inputs are resized to it).
    path: the folder it was loaded from ('' when built in memory).
  """

  def __init__(self, params: Any, meta: Mapping[str, Any], path: str = ''):
    self.meta = dict(meta)
    self.path = path
    self.image_size = int(meta['config']['image_size'])
    self._mean = np.asarray(meta['target_mean'], np.float64)
    self._std = np.asarray(meta['target_std'], np.float64)
    module = build_module(meta['config']['model'])
    self._params = jax.device_put(params)
    self._apply = jax.jit(lambda p, x: module.apply({'params': p},
                                                   x.astype(jnp.float32) / 127.5 - 1.0))

  @property
  def held_out(self) -> dict:
    """{'pose_error', 'expression_error', 'mae': {field: ...}, 'num_images'} on held-out
    identities (empty when it was not measured)."""
    return dict(self.meta.get('held_out', {}))

  def predict_targets(self, images: np.ndarray) -> np.ndarray:
    """float64 [N, 6] in TARGET_FIELDS order and units, for uint8 [N, S, S, 3]."""
    images = resize_batch(images, self.image_size)
    out = []
    for start in range(0, len(images), _BATCH):
      chunk = images[start:start + _BATCH]
      pad = _BATCH - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], np.uint8)])
      out.append(np.asarray(self._apply(self._params, chunk), np.float64)[:_BATCH - pad])
    z = np.concatenate(out) if out else np.zeros((0, len(TARGET_FIELDS)))
    return z * self._std + self._mean

  def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pose float64 [N, 3] (yaw, pitch, roll) degrees, expression float64 [N, 3])."""
    t = self.predict_targets(images)
    return t[:, :3], t[:, 3:]


def errors(predicted: np.ndarray, truth: np.ndarray) -> dict:
  """Held-out errors of predicted vs true targets [N, 6] (TARGET_FIELDS order and units)."""
  p, t = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
  mae = np.abs(p - t).mean(axis=0) if len(p) else np.full(len(TARGET_FIELDS), np.nan)
  return {'pose_error': metrics.pose_error(p[:, :3], t[:, :3]) if len(p) else float('nan'),
          'expression_error': (metrics.expression_error(p[:, 3:], t[:, 3:]) if len(p)
                               else float('nan')),
          'mae': {f: float(v) for f, v in zip(TARGET_FIELDS, mae)},
          'num_images': int(len(p))}


def read_split(source, size: int, max_images: int = 0, log: Optional[Log] = None
               ) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, size, size, 3], targets float64 [N, 6]) of a synthetic_faces source
  (records with 'image' and 'attribute_params'); max_images > 0 takes an even subsample."""
  n = len(source)
  index = np.arange(n)
  if 0 < max_images < n:
    index = np.linspace(0, n - 1, max_images).round().astype(int)
  images, targets = [], []
  start = time.perf_counter()
  for k in range(0, len(index), 1000):
    records = source.__getitems__([int(i) for i in index[k:k + 1000]])
    images.append(resize_batch(np.stack([np.asarray(r['image'], np.uint8) for r in records]),
                               size))
    targets.append(targets_from_attributes(np.stack([r['attribute_params'] for r in records])))
    if log and len(index) > 1000:
      log(f'  read {min(k + 1000, len(index))}/{len(index)} images '
          f'({time.perf_counter() - start:.0f} s)')
  return np.concatenate(images), np.concatenate(targets)


def train(config: ml_collections.ConfigDict, train_images: np.ndarray,
          train_targets: np.ndarray, log: Log = print) -> tuple[Any, dict]:
  """Fits the regressor (config: the `regressor` block of configs/eval_estimators.py).

  Args:
    config: model, seed, batch_size, num_train_steps, learning_rate, weight_decay,
      warmup_steps, log_every_steps.
    train_images: uint8 [N, S, S, 3] at config.image_size.
    train_targets: float64 [N, 6] (targets_from_attributes).
    log: progress lines (step, loss, ETA).

  Returns:
    (params, meta without 'held_out').
  """
  from fsjax.train import metric_logging  # pylint: disable=g-import-not-at-top
  mean = train_targets.mean(axis=0)
  std = np.maximum(train_targets.std(axis=0), 1e-6)
  module = build_module(config.model)
  size = int(config.image_size)
  rng = jax.random.key(int(config.seed))
  # Jitted: an eager init compiles every op on its own (~10 s on a 2-core CPU).
  params = jax.jit(module.init)(rng, jnp.zeros((1, size, size, 3)))['params']
  steps = int(config.num_train_steps)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, float(config.learning_rate), max(1, min(int(config.warmup_steps), steps - 1)),
      max(steps, 2))
  tx = optax.adamw(schedule, weight_decay=float(config.weight_decay))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, images, z):
    def loss_fn(p):
      pred = module.apply({'params': p}, images.astype(jnp.float32) / 127.5 - 1.0)
      return jnp.mean((pred - z) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  batch = int(config.batch_size)
  order = np.random.default_rng(int(config.seed))
  every = max(1, int(config.log_every_steps))
  progress = metric_logging.Progress(steps, 0, batch, main_keys=('loss',), printer=log)
  losses = []
  for i in range(1, steps + 1):
    idx = order.integers(0, len(train_images), batch)
    images, targets = train_images[idx], train_targets[idx]
    flip = order.random(batch) < 0.5
    images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
    targets = targets * np.where(flip[:, None], FLIP_SIGN, 1.0)
    z = ((targets - mean) / std).astype(np.float32)
    params, opt_state, loss = step(params, opt_state, images, z)
    if i % every == 0 or i == steps:
      losses.append(float(loss))
      progress.update(i, {'loss': float(loss)})
  meta = {'format': 'fsjax.eval.attribute_regressor/1', 'config': config.to_dict(),
          'fields': list(TARGET_FIELDS), 'target_mean': mean.tolist(),
          'target_std': std.tolist(), 'train_images': int(len(train_images)),
          'final_loss': losses[-1] if losses else float('nan'),
          'train_seconds': progress.elapsed()}
  return jax.device_get(params), meta


def save(directory: str, params: Any, meta: Mapping[str, Any]) -> None:
  """Writes params.npz and meta.json into an existing directory."""
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  np.savez(os.path.join(directory, PARAMS_FILE), **{k: np.asarray(v) for k, v in flat.items()})
  with open(os.path.join(directory, META_FILE), 'w') as f:
    json.dump(meta, f, indent=2)


def load(directory: str) -> AttributeEstimator:
  """The estimator saved in `directory` (see `save`)."""
  with open(os.path.join(directory, META_FILE)) as f:
    meta = json.load(f)
  with np.load(os.path.join(directory, PARAMS_FILE)) as data:
    flat = {k: np.asarray(data[k]) for k in data.files}
  return AttributeEstimator(traverse_util.unflatten_dict(flat, sep='/'), meta, directory)
