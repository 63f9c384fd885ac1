"""The FaceShifter paper model: AEI-Net at 256 px (taotaonice AAD variant).

Run (needs an identity checkpoint, see README "Identity encoder" and a dataset
prepared with `fsjax build`):

  fsjax train --config configs/default.py --workdir /tmp/fs256 \
    --config.identity.checkpoint=/path/to/arcface_r50 \
    --config.dataset.name=aligned_faces/ffhq --config.dataset.data_dir=~/tensorflow_datasets

Expected: G+E 184.34M params, D 46.05M (n_layers 6, 3 scales); the paper trains
500K steps at global batch 16-32; the PyTorch ports need > 1 week on 2x V100.
"""

import ml_collections


def get_config():
  """Returns the paper configuration (locked by the caller)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.image_size = 256
  # Fine-tuning: an fsjax export (`fsjax convert-generator`, `fsjax export`) or training
  # workdir whose generator (and discriminator, when it has one) replace the random init of
  # a fresh run; its identity encoder is used when identity.checkpoint is ''. Ignored once
  # the workdir has checkpoints (the run resumes). '' = random init.
  config.init_from = ''

  # AEI-Net: attribute encoder (U-Net) + AAD generator.
  config.model = ml_collections.ConfigDict()
  # Down-path widths; len() = number of stride-2 convs (image_size / 2**len = 2).
  config.model.attr_channels = (32, 64, 128, 256, 512, 1024, 1024)
  # Input width of each AAD ResBlk (len = len(attr_channels) + 1); the block
  # outputs are gen_channels[1:] + (3,).
  config.model.gen_channels = (1024, 1024, 1024, 1024, 512, 256, 128, 64)
  config.model.id_dim = 512  # z_id size fed to the AAD Dense layers.
  # z_id = the identity encoder's embedding divided by its L2 norm (fsjax's own models); False
  # feeds the raw embedding (GHOST's weights). L_id compares normalised embeddings either way.
  config.model.id_normalize = True
  config.model.aad_norm = 'instance'  # 'instance' (taotaonice/GHOST) | 'batch' (mindslab)
  config.model.aad_att_kernel = 1  # gamma/beta_att conv: 1 (taotaonice) | 3 (mindslab)
  config.model.aad_mask_channels = 'one'  # 'one' (taotaonice) | 'full' (C channels, mindslab)
  config.model.conv_bias = False  # bias on the ResBlk 3x3 convs (mindslab: True)
  config.model.aad_num_blocks = 2  # [AAD-ReLU-Conv3x3] units per ResBlk: 2 (paper); GHOST 1|2|3
  config.model.dtype = 'float32'  # compute dtype: 'float32' | 'bfloat16'; params stay fp32
  config.model.remat = False  # rematerialise AAD ResBlks to save memory
  # One conv for the gamma/beta attribute convs of each ResBlk's AAD layers (same params and
  # result); off here until a GPU measures it (docs/performance.md, scripts/gpu_bench.sh E).
  config.model.aad_merge_attr_convs = False
  # Channels of a full-resolution attribute level (Conv 3x3 of X_t, concatenated to the
  # bilinear x2 that is the paper's last z_att level); 0 = the paper. fsjax option for small
  # images, where the paper's last level only holds half-resolution detail (docs/fidelity.md).
  config.model.attr_full_res_channels = 0

  # Multi-scale PatchGAN discriminator (pix2pixHD).
  config.discriminator = ml_collections.ConfigDict()
  config.discriminator.num_d = 3
  config.discriminator.n_layers = 6
  config.discriminator.ndf = 64
  config.discriminator.max_channels = 512
  config.discriminator.norm = 'instance'  # 'instance' | 'batch' | 'none'
  config.discriminator.real_input = 'source'  # 'source' (X_s) | 'target' (X_t)

  # Frozen ArcFace identity encoder (IResNet).
  config.identity = ml_collections.ConfigDict()
  config.identity.checkpoint = ''  # dir written by `fsjax convert-arcface` or `fsjax train-arcface`
  config.identity.arch = 'r50'  # r18 | r34 | r50 | r100 (used only with allow_random)
  config.identity.crop_mode = 'resize'  # 'resize' (ffhq alignment) | 'crop_19_237' (arcface 5-point at 0.85)
  config.identity.allow_random = False  # smoke tests only: random identity encoder
  # An ArcFace config file trained once into WORKDIR/identity when no checkpoint is given
  # (configs/synthetic.py: configs/arcface_synthetic.py); '' = off.
  config.identity.auto_train = ''

  config.loss = ml_collections.ConfigDict()
  config.loss.adv = 1.0
  config.loss.att = 10.0
  config.loss.id = 5.0
  config.loss.rec = 10.0
  config.loss.adv_g = 'hinge'  # 'hinge': relu(1 - D(Y)) | 'mean': -D(Y)
  # L_id reads Y randomly zoomed / shifted by up to this fraction (fsjax option against
  # adversarial patterns on a small identity encoder, docs/fidelity.md); 0 = the paper.
  config.loss.id_jitter = 0.0
  # Weight of the full-resolution attribute channels (model.attr_full_res_channels) in L_att;
  # the paper has no such level. 0: they feed the generator but L_att ignores them.
  config.loss.att_full_res = 1.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'adam'
  config.optimizer.g_learning_rate = 4e-4
  config.optimizer.d_learning_rate = config.optimizer.get_ref('g_learning_rate')
  config.optimizer.b1 = 0.0
  config.optimizer.b2 = 0.999
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = 'constant'  # 'constant' | 'cosine'
  config.optimizer.warmup_steps = 0
  config.optimizer.grad_clip_norm = 0.0  # 0 disables clipping
  config.ema_decay = 0.999

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'aligned_faces/ffhq'  # TFDS name[/config]
  config.dataset.data_dir = ''  # TFDS data dir; '' = TFDS default
  config.dataset.manual_dir = ''
  config.dataset.split = 'train'
  config.dataset.alignment = 'ffhq'  # must agree with identity.crop_mode
  config.dataset.same_identity_ratio = 0.2
  config.dataset.same_target = 'other'  # same-identity target: 'other' image of the label | 'self'
  config.dataset.flip = True
  config.dataset.color_jitter = 0.0
  # AEI-Net trains only on records without an occluder (needs 'attribute_params', i.e.
  # synthetic_faces), like the paper's mostly unoccluded AEI data. HEAR-Net's heuristic error
  # assumes an AEI-Net that fails on occlusions; measured: this alone does not make ours fail
  # (docs/fidelity.md "HEAR-Net"). The HEAR trainer ignores it.
  config.dataset.drop_occluded = False
  config.dataset.num_workers = 2
  config.dataset.prefetch = 2

  # Multi-host configs (gpu_8x.py, tpu_pod.py) derive per_device_batch_size from these two;
  # 0 = not set (no check of the run's device count).
  config.num_devices = 0
  config.global_batch_size = 0
  config.per_device_batch_size = 4
  config.num_train_steps = 500_000
  config.log_every_steps = 100
  config.sample_every_steps = 1000
  config.checkpoint_every_steps = 5000
  config.keep_checkpoints = 3
  config.keep_period = 50_000
  config.max_nonfinite_steps = 20
  return config
