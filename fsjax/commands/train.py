"""`fsjax train --config configs/X.py --workdir DIR [--config.a.b=v ...]`: train AEI-Net.

Examples:
  fsjax train --config configs/synthetic.py --workdir ~/fsjax_runs/synthetic
  fsjax train --config configs/default.py --workdir /runs/fs256 \
    --config.identity.checkpoint=/models/arcface_r50 --config.dataset.name=aligned_faces/ffhq
  # GPU cluster, one command per host:
  fsjax train --config configs/gpu_8x.py --workdir /shared/run \
    --coordinator_address=host0:1234 --num_processes=2 --process_id=0

TPU pods are detected automatically (no multi-host flags). Re-running the same command
resumes from the newest checkpoint in --workdir. The logic lives in fsjax.trainer.
"""

import logging as py_logging

from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Training config file (configs/*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (checkpoints, logs, samples).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', "Multi-host (GPU clusters): 'host:port' of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-host: this process, 0-based.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {argv[1:]}')
  # Before anything touches a device.
  from fsjax import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  logging.set_verbosity(logging.INFO)
  py_logging.getLogger().setLevel(py_logging.INFO)
  # fsjax logs through Python logging at INFO; Orbax/JAX internals (absl logger) only warn.
  for noisy in ('absl', 'jax', 'orbax'):
    py_logging.getLogger(noisy).setLevel(py_logging.WARNING)
  from fsjax import trainer  # pylint: disable=g-import-not-at-top
  trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
