"""A tiny AEI-Net for tests and smoke runs: 64 px, channel widths / 8.

Run (a few seconds a step on a 2-core CPU):
  fsjax train --config configs/tiny.py --workdir /tmp/fs_tiny \
    --config.identity.allow_random=True

Expected: nothing visually useful; it exists to exercise every code path fast.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.image_size = 64
  config.model.attr_channels = (4, 8, 16, 32, 64)
  config.model.gen_channels = (128, 128, 64, 32, 16, 8)
  config.model.id_dim = 64
  # One attribute conv per ResBlk: at these widths the 1x1 convs are tiny GEMMs; on the 2-core
  # CPU, six alternating rounds of `fsjax bench --config configs/tiny.py --steps 20 --warmup 3`
  # (2026-11-27): faster in five, median step 52.2 ms merged vs 61.1 ms separate.
  config.model.aad_merge_attr_convs = True
  config.discriminator.num_d = 2
  config.discriminator.n_layers = 3
  config.discriminator.ndf = 8
  config.discriminator.max_channels = 64
  # A tiny IResNet: 1 block per stage, widths 8/16/32/64, 64-d embedding.
  config.identity.arch = 'tiny'
  config.identity.allow_random = True
  config.dataset.name = 'synthetic_faces/64'
  config.dataset.alignment = 'ffhq'
  config.dataset.num_workers = 0
  config.per_device_batch_size = 2
  config.num_train_steps = 3
  config.log_every_steps = 1
  config.sample_every_steps = 2
  config.checkpoint_every_steps = 2
  return config
