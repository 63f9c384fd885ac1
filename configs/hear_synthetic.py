"""HEAR-Net on the synthetic faces, on top of the embedded default (configs/synthetic.py).

Run (after the README main job wrote workdirs/synthetic):

  fsjax train-hear --config configs/hear_synthetic.py --workdir workdirs/hear_synthetic \
    --aei workdirs/synthetic

Expected: see README "HEAR-Net" for the measured run (occluder-region PSNR of AEI-Net alone
vs AEI-Net + HEAR-Net on held-out occluded pairs).
"""

from configs import hear_default


def get_config():
  """Returns the CPU-sized HEAR-Net configuration (locked by the caller)."""
  config = hear_default.get_config()
  config.image_size = 64
  config.hear.channels = (16, 32, 64, 64, 64)  # 64 -> 2 px
  config.hear.procedural_occluder_size = 128
  config.hear.hardest_fraction = 0.25  # of ~36K images: enough variety for a short run
  config.hear.score_batch_size = 64
  config.dataset.name = 'synthetic_faces/64'
  config.dataset.num_workers = 0
  config.per_device_batch_size = 8
  config.num_train_steps = 3000
  config.log_every_steps = 50
  config.sample_every_steps = 500
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 2
  return config
