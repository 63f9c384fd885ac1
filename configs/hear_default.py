"""HEAR-Net (FaceShifter stage 2) at 256 px with the paper's settings.

Run (on top of a 256 px AEI-Net export or workdir, e.g. configs/default.py or a converted
GHOST generator):

  fsjax train-hear --config configs/hear_default.py --workdir /runs/hear256 \
    --aei /runs/fs256 --config.dataset.name=aligned_faces/ffhq

Expected: HEAR-Net 16,663,043 params; the paper trains ~50K steps at batch 32 on the 10 %
of images with the largest heuristic error plus pasted hand/object occluders. Not run here
(no GPU, no real data); configs/hear_synthetic.py is the measured CPU run.
"""

import ml_collections


def get_config():
  """Returns the paper's HEAR-Net configuration (locked by the caller)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.image_size = 256  # must be the AEI-Net's

  config.model = ml_collections.ConfigDict()
  config.model.dtype = 'float32'  # compute dtype of HEAR-Net: 'float32' | 'bfloat16'

  config.hear = ml_collections.ConfigDict()
  config.hear.channels = (64, 128, 256, 512, 512)  # down-path widths (256 -> 8 px)
  config.hear.full_res_channels = 0  # fsjax option: full-resolution input path (0 = paper)
  config.hear.target_input = False  # fsjax option: X_t joins the input (False = paper)
  # fsjax option: output m * X_t + (1 - m) * Y' with a predicted mask m (X_t then joins the
  # input; m learns the known occluder masks by config.loss.mask). False = the paper.
  # Measured 2026-12-03: m finds the occluders but Y' copies X_t (docs/fidelity.md).
  config.hear.blend_mask = False
  # fsjax option, with blend_mask: down-path widths of a second U-Net that alone reads X_t
  # (and dY_t) to give m, while Y' comes from the paper's 6-channel U-Net; () = m is a 4th
  # output channel of the one U-Net. Measured 2026-12-03 (64 px, (16, 32, 64, 64)): Y' no
  # longer copies X_t, +4.7 dB in the occluder, but ID retrieval still falls (docs/fidelity.md).
  config.hear.mask_channels = ()
  # fsjax options, with mask_channels: keep_swap drops the image U-Net (Y = m X_t + (1 - m)
  # Y_hat: AEI-Net's swap is kept wherever m is 0); mask_threshold t > 0 hardens m to m > t at
  # inference (0 = soft m). False / 0 = as above.
  config.hear.keep_swap = False
  config.hear.mask_threshold = 0.0
  # Occluders pasted on every target: a folder with hands/*.png and objects/*.png RGBA
  # cut-outs (EgoHands / GTEA Hand2K hands, ShapeNet renders), '' = the built-in set.
  config.hear.occluders_dir = ''
  config.hear.num_procedural_occluders = 32  # built-in hands and objects (each)
  config.hear.procedural_occluder_size = 256  # render size of the built-in cut-outs
  config.hear.occluder_mix = (0.25, 0.25, 0.25, 0.25)  # none / hand / object / both
  config.hear.occluder_scale = (0.5, 1.0)  # occluder length / face size
  config.hear.occluder_max_rotation = 90.0  # degrees, either way
  config.hear.occluder_face_box = (0.2, 0.1, 0.8, 0.95)  # face box, fractions of the image
  # Train on this fraction of the images with the largest heuristic error (1.0 = all),
  # scored once with the frozen AEI-Net.
  config.hear.hardest_fraction = 0.1
  config.hear.score_batch_size = 32  # images per scoring call

  config.loss = ml_collections.ConfigDict()
  config.loss.id = 1.0  # L_id' = 1 - cos(z_id(Y_st), z_id(X_s))
  config.loss.chg = 1.0  # L_chg = |Y_st - Y_hat_st|
  config.loss.rec = 1.0  # L_rec' on same-identity pairs
  # fsjax option: L_occ = |Y_st - X_t| on the pasted occluders' pixels (0 = the paper).
  config.loss.occ = 0.0
  # fsjax option: L_mask = BCE of a blend_mask HEAR-Net's mask against the occluder masks.
  config.loss.mask = 0.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 4e-4
  config.optimizer.b1 = 0.0
  config.optimizer.b2 = 0.999
  config.optimizer.grad_clip_norm = 0.0  # 0 disables clipping

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'aligned_faces/ffhq'
  config.dataset.data_dir = ''
  config.dataset.manual_dir = ''
  config.dataset.split = 'train'
  config.dataset.same_identity_ratio = 0.5  # X_t an occluded copy of X_s
  config.dataset.same_target = 'self'
  # Leave out the records whose synthetic_faces attributes draw an occluder (their masks
  # are not known to L_occ; synthetic_faces only).
  config.dataset.drop_occluded = False
  # Add each record's own occluder (synthetic_faces glasses and hands, rendered again from
  # its parameters) to the pairs' occluder_mask, for L_occ and L_mask (synthetic_faces only).
  config.dataset.own_occluder_masks = False
  config.dataset.flip = True
  config.dataset.color_jitter = 0.0
  config.dataset.num_workers = 2
  config.dataset.prefetch = 2

  config.per_device_batch_size = 32  # the paper's batch on one device
  config.num_train_steps = 50_000
  config.log_every_steps = 100
  config.sample_every_steps = 1000
  config.checkpoint_every_steps = 5000
  config.keep_checkpoints = 3
  config.keep_period = 0
  config.max_nonfinite_steps = 20
  return config
