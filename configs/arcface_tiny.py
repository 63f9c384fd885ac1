"""A tiny ArcFace run for tests and smoke runs: the 'tiny' IResNet, 3 steps.

Run (about a minute on a 2-core CPU, after synthetic_faces/112 is built):
  fsjax train-arcface --config configs/arcface_tiny.py --workdir /tmp/arcface_tiny

Expected: nothing useful (chance-level verification); it exercises every code path,
including the class matrix sharded over devices (fc.shard='always').
"""

from configs import arcface_synthetic


def get_config():
  config = arcface_synthetic.get_config()
  config.model.arch = 'tiny'
  config.model.layers = ()
  config.model.width = 0
  config.model.embedding_dim = 0  # tiny: widths 8/16/32/64, 64-d
  config.loss.margin_warmup_steps = 0
  config.loss.identity_params = 1.0  # exercises the identity-parameter head
  config.fc.shard = 'always'
  config.optimizer.warmup_steps = 0
  config.eval.num_pairs = 100
  config.eval.batch_size = 16
  config.eval.max_images = 64
  config.per_device_batch_size = 2
  config.num_train_steps = 3
  config.log_every_steps = 1
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 2
  return config
