"""The estimators `fsjax eval --protocol synthetic` builds on first use (and caches).

- `regressor`: pose (yaw, pitch, roll, degrees) and expression parameters from a synthetic
  face image (fsjax.eval.regressor), trained on the train identities of `dataset`, its own
  error measured on the held-out test identities;
- `recognizer`: the independent ArcFace of configs/arcface_eval_recognizer.py.

Override fields on the command line, e.g. a quick smoke run:
  fsjax eval --checkpoint EXPORT --estimators.regressor.num_train_steps=50 \
    --estimators.recognizer.num_train_steps=20
A changed field (or a rebuilt, different dataset) builds new estimators; the old ones
stay in the cache (fsjax.eval.cache).
"""

import ml_collections

from configs import arcface_eval_recognizer


def get_config():
  """Returns the estimator configuration."""
  config = ml_collections.ConfigDict()

  config.regressor = ml_collections.ConfigDict()
  config.regressor.dataset = 'synthetic_faces/64'  # train split: fit; test split: held-out error
  config.regressor.image_size = 64  # inputs of other sizes are area-resized to this
  config.regressor.model = ml_collections.ConfigDict()
  config.regressor.model.widths = (8, 16, 32, 64, 128)  # stride-1 stem, then 2 convs a stage
  config.regressor.model.dense = 128
  config.regressor.seed = 0
  config.regressor.batch_size = 64
  config.regressor.num_train_steps = 3000
  config.regressor.learning_rate = 2e-3
  config.regressor.weight_decay = 1e-4
  config.regressor.warmup_steps = 100
  config.regressor.log_every_steps = 250
  config.regressor.max_train_images = 0  # 0 = every train image
  config.regressor.max_eval_images = 0  # 0 = every held-out image

  config.recognizer = arcface_eval_recognizer.get_config()
  return config
