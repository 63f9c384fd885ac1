r"""The paper model (256 px) on one host with 8 GPUs, or several such hosts.

Run (one host):
  fsjax train --config configs/gpu_8x.py --workdir /runs/fs256_gpu \
    --config.identity.checkpoint=/models/arcface_r50 \
    --config.dataset.name=aligned_faces/ffhq --config.dataset.data_dir=/data/tfds
Several hosts (same command on each, process_id 0..N-1, and num_devices = 8 * N):
  ... --coordinator_address=host0:1234 --num_processes=2 --process_id=0 \
    --config.num_devices=16

Batch: global_batch_size = 32 (the PyTorch reimplementations' batch) over
num_devices = 8 GPUs -> per_device_batch_size = 32 // 8 = 4 (derived by reference:
override --config.global_batch_size or --config.num_devices, not the per-device value).
bfloat16 compute, float32 params.
Expected: G+E 184.3M / D 46.1M params; the reimplementations need > 1 week for 500K
steps on 2x V100 at batch 32; on 8x A100/H100 with bf16 expect several steps/s (see the
README "Performance" table for measured figures). Quality: the paper's 500K steps.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.dtype = 'bfloat16'
  config.num_devices = 8  # devices of all hosts together (checked against the run)
  config.global_batch_size = 32
  config.per_device_batch_size = config.get_ref('global_batch_size') // config.get_ref(
      'num_devices')
  config.dataset.num_workers = 8  # grain worker processes per host
  config.dataset.prefetch = 4
  config.log_every_steps = 100
  config.sample_every_steps = 2000
  config.checkpoint_every_steps = 5000
  return config
