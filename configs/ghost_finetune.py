"""Fine-tune GHOST's (ai-forever/sber-swap) pretrained AEI-Net with GHOST's training defaults.

Run (first convert GHOST's release files, README "Pretrained weights"; then build your faces
with GHOST's alignment):

  fsjax convert-generator G_unet_2blocks.pth ghost_2blocks --identity backbone.pth \
    --discriminator D_unet_2blocks.pth
  fsjax build aligned_faces/folder_ghost224 --manual_dir ~/my_faces
  fsjax train --config configs/ghost_finetune.py --config.init_from=ghost_2blocks \
    --workdir workdirs/ghost_ft

G (and D, when converted with --discriminator) start from the export instead of random
init; the identity encoder is the export's (copied to WORKDIR/identity); the step counter
and the Adam states start fresh. Resume with the same command: once WORKDIR has checkpoints
the run continues from them. For 1- or 3-block generators add
--config.model.aad_num_blocks=1|3.

From GHOST's train.py: loss weights adv 1 / att 10 / id 20 / rec 10, same-person ratio 0.2,
Adam lr 4e-4 betas (0, 0.999) with weight decay 1e-4, D = pix2pixHD n_layers 5, instance
norm, 3 scales, real images = X_s, the raw (unnormalised) ArcFace z_id while L_id compares
cosines. Differences that remain: fsjax decays weights decoupled (AdamW; torch's Adam adds
1e-4 * w to the gradient), averages L_adv over all pairs (GHOST: different-person pairs
only), reads the identity of X_s and Y with align_corners=True resizes (GHOST: False) from
the 256 crops, and keeps an EMA of G (ema_decay) for export.

Expected: nothing measured here. No GHOST weights and no real-face training set were
available on the machine this was written on; the code path runs in tests/test_ghost.py on
tiny random GHOST-layout checkpoints (2 steps). The full model (184.3M G+E, 33.5M D) needs
an accelerator: GHOST reports ~62 GFLOP per 256 px image forward for 2 blocks.
"""

from configs import default
from fsjax.aei import convert

# GHOST's released generators: encoder widths, AAD ResBlk inputs, 512-d z_id.
GHOST_ATTR = (32, 64, 128, 256, 512, 1024, 1024)
GHOST_GEN = (1024, 1024, 1024, 1024, 512, 256, 128, 64)


def get_config():
  config = default.get_config()
  config.model.update(convert.GeneratorLayout(2, GHOST_ATTR, GHOST_GEN, 512).model_fields())
  config.discriminator.update(convert.DiscriminatorLayout(
      num_d=3, n_layers=5, ndf=64, max_channels=512).discriminator_fields())
  config.discriminator.real_input = 'source'

  # The export's identity encoder (set identity.checkpoint to use another one).
  config.identity.checkpoint = ''
  config.identity.crop_mode = 'resize'  # what dataset.alignment 'ghost224' needs
  config.dataset.name = 'aligned_faces/folder_ghost224'
  config.dataset.alignment = 'ghost224'
  config.dataset.same_identity_ratio = 0.2

  config.loss.adv = 1.0
  config.loss.att = 10.0
  config.loss.id = 20.0
  config.loss.rec = 10.0
  config.loss.adv_g = 'hinge'

  config.optimizer.name = 'adam'
  config.optimizer.g_learning_rate = 4e-4
  config.optimizer.b1 = 0.0
  config.optimizer.b2 = 0.999
  config.optimizer.weight_decay = 1e-4

  config.per_device_batch_size = 4  # GHOST: batch 16 (4 devices x 4)
  config.num_train_steps = 20_000
  config.checkpoint_every_steps = 1000
  config.keep_period = 10_000
  return config
