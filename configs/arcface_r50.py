"""ArcFace r50 on real faces (arcface_torch recipe): the encoder AEI-Net uses at 256 px.

Data: the ArcFace-aligned 112x112 identity set of aligned_faces (`arcface112` config:
5-point alignment, one folder per identity in --config.dataset.manual_dir, e.g. an
MS1MV2/Glint360K/VGGFace2 export), built once with
  fsjax build aligned_faces/arcface112 --manual_dir /data/identities

Run (GPU/TPU; each host runs the same command):
  fsjax train-arcface --config configs/arcface_r50.py --workdir /runs/arcface_r50 \
    --config.dataset.manual_dir=/data/identities

arcface_torch's recipe: SGD momentum 0.9, lr 0.1 for a global batch of 1024 (scale it
linearly with the batch), weight decay 5e-4, PolyScheduler (power 2), s = 64, m = 0.5, 20
epochs; the class matrix is sharded over devices (partial FC layout) and, beyond a
few hundred thousand identities, sampled with --config.fc.sample_rate=0.1. Verification
uses a split of held-out identities (`--config.eval.split=test` when the manual dir has
train/ and test/ folders; '' disables it). The encoder is written
to WORKDIR/identity with alignment 'arcface' (AEI configs: identity.crop_mode
'crop_19_237' with arcface-aligned data, 'resize' with ffhq-aligned data).
Expected (arcface_torch, MS1MV2 r50): LFW 99.8%, IJB-C TAR@FAR=1e-4 ~95%.
"""

from configs import arcface_synthetic


def get_config():
  config = arcface_synthetic.get_config()
  config.model.arch = 'r50'
  config.model.layers = ()
  config.model.width = 0
  config.model.embedding_dim = 0  # r50: 512-d
  config.model.stem_stride = 1  # arcface_torch's layout
  config.model.dtype = 'bfloat16'

  config.loss.scale = 64.0
  config.loss.margin = 0.5
  config.loss.margin_warmup_steps = 0

  config.fc.shard = 'always'
  config.fc.sample_rate = 1.0  # 0.1-0.3 for millions of identities (partial FC)

  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.1  # for a global batch of 1024
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = 'poly'
  config.optimizer.warmup_steps = 0
  config.optimizer.grad_clip_norm = 5.0

  config.dataset.name = 'aligned_faces/arcface112'
  config.dataset.split = 'train'
  config.dataset.alignment = 'arcface'
  config.dataset.num_workers = 8
  config.dataset.prefetch = 4

  config.eval.split = ''  # e.g. 'train[99%:]' of a dataset with held-out identities
  config.eval.num_pairs = 6000
  config.eval.max_images = 20_000
  config.eval.batch_size = 256

  config.per_device_batch_size = 128  # x 8 devices = 1024
  config.num_train_steps = 110_000  # ~20 epochs of MS1MV2 (5.8M images) at 1024
  config.log_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  config.keep_checkpoints = 3
  return config
