r"""The paper model (256 px) on a TPU pod slice, e.g. v5e-64 (16 hosts x 4 chips) or v4-64.

Run (the same command on every host of the slice; jax.distributed is auto-detected):
  gcloud compute tpus tpu-vm ssh NAME --worker=all --command="fsjax train \
    --config configs/tpu_pod.py --workdir /mnt/bucket/fs256_pod \
    --config.identity.checkpoint=/mnt/bucket/arcface_r50 \
    --config.dataset.name=aligned_faces/ffhq --config.dataset.data_dir=/mnt/bucket/tfds"
The workdir must be one folder every host sees (e.g. a gcsfuse mount of a bucket);
fsjax writes it with ordinary file I/O (gs:// URLs are not supported).

Batch: global_batch_size = 256 over num_devices = 64 chips -> per_device_batch_size =
256 // 64 = 4 (derived by reference; set --config.num_devices to the slice's chip
count, e.g. 32 for v4-64 -> 8 per chip). Each host feeds 4 chips x 4 = 16 images.
The learning rate stays at the paper's 4e-4 with a 2K-step warm-up (the larger batch
is not rescaled: GAN training is fragile to it; lower it if late collapse appears).
bfloat16 compute, float32 params, attribute/AAD blocks rematerialised to fit.
Expected: G+E 184.3M / D 46.1M params; several steps/s on a v5e-64 (not measured
here); 500K steps as in the paper take days instead of weeks.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.dtype = 'bfloat16'
  config.model.remat = True
  config.num_devices = 64  # chips of the whole slice (checked against the run)
  config.global_batch_size = 256
  config.per_device_batch_size = config.get_ref('global_batch_size') // config.get_ref(
      'num_devices')
  config.optimizer.warmup_steps = 2000
  config.dataset.num_workers = 16
  config.dataset.prefetch = 4
  config.log_every_steps = 100
  config.sample_every_steps = 2000
  config.checkpoint_every_steps = 2000
  config.keep_period = 50_000
  return config
