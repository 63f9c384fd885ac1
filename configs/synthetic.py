r"""The embedded default: AEI-Net on synthetic_faces/64 with the synthetic-identity ArcFace.

This is the README's "run the main job" command; it needs nothing but the install:

  fsjax train --config configs/synthetic.py --workdir ~/fsjax_runs/synthetic

On first use it (1) renders the synthetic_faces/64 dataset into the TFDS data dir
(about a minute), (2) trains the identity encoder of configs/arcface_synthetic.py into
WORKDIR/identity (synthetic_faces/112 is rendered for it; see that config for its
time; skipped when WORKDIR/identity exists, or pass
--config.identity.checkpoint=DIR of an encoder you already have), then (3) trains
AEI-Net, resuming from WORKDIR/checkpoints when run again. Progress, losses and the
ETA go to the console; TensorBoard to WORKDIR/tensorboard; sample grids
X_s | X_t | Y | Y_ema to WORKDIR/samples/.

Model: the AEI-Net layout of the paper at 64 px (5 encoder levels, 6 AAD ResBlks) with
widths / 8 of the paper's (encoder 8..128, AAD blocks 128..8; G+E 1.6M params) and a
2-scale, 3-layer PatchGAN (ndf 16).
Speed: 0.27 s/step at batch 8 (3.7 steps/s, ~30 img/s) on the idle 2-core dev CPU, so
the 5000 steps take ~25-27 min; compilation ~1 min.
Expected quality (recorded run, README "Proof that it learns", 2026-11-26: 26.9 min wall):
on 1000 held-out pairs of synthetic_faces/pairs64 the swap is closer in identity to the
source than to the target in 97.7% of pairs (our ArcFace) / 91.3% (a second recognizer),
and its MSE to the true swap is 0.0326 vs 0.0533 for returning X_t and 0.0799 for X_s.
"""

from configs import default


def get_config():
  """Returns the synthetic-faces configuration (locked by the caller)."""
  config = default.get_config()
  config.image_size = 64

  config.model.attr_channels = (8, 16, 32, 64, 128)  # 64 px -> 2 px in 5 stride-2 convs
  config.model.gen_channels = (128, 128, 64, 32, 16, 8)
  config.model.id_dim = 128  # configs/arcface_synthetic.py embeds to 128-d
  config.model.dtype = 'float32'  # CPU: bfloat16 is slower there

  config.discriminator.num_d = 2
  config.discriminator.n_layers = 3
  config.discriminator.ndf = 16
  config.discriminator.max_channels = 128

  config.identity.checkpoint = ''  # '' = WORKDIR/identity, trained by auto_train when missing
  config.identity.auto_train = 'configs/arcface_synthetic.py'
  config.identity.arch = 'tiny'
  config.identity.crop_mode = 'resize'  # synthetic faces are framed FFHQ-style

  config.dataset.name = 'synthetic_faces/64'
  config.dataset.alignment = 'ffhq'
  config.dataset.num_workers = 0  # decoding 64 px PNGs is cheap next to the step
  config.dataset.prefetch = 2

  config.per_device_batch_size = 8
  config.num_train_steps = 5000
  config.log_every_steps = 20
  config.sample_every_steps = 500
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 2
  config.keep_period = 0
  config.ema_decay = 0.99  # short run: a 0.999 EMA would still be mostly the initialisation
  return config
