"""`fsjax train-arcface --config configs/arcface_X.py --workdir DIR [--config.a.b=v ...]`.

Trains an ArcFace identity encoder (IResNet + additive angular margin loss) and writes
it to DIR/identity (identity.json + Orbax variables) for AEI-Net
(--config.identity.checkpoint=DIR/identity) and fsjax.load_identity_encoder.

Examples:
  fsjax train-arcface --config configs/arcface_synthetic.py --workdir ~/runs/arcface_synthetic
  fsjax train-arcface --config configs/arcface_r50.py --workdir /runs/arcface_r50 \
    --config.dataset.manual_dir=/data/faces_emore_aligned

synthetic_faces is rendered on first use. Re-running the same command resumes from the
newest checkpoint in --workdir. The logic lives in fsjax.arcface_trainer.
"""

import logging as py_logging

from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'ArcFace config file (configs/arcface_*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (checkpoints, logs, identity/).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', "Multi-host (GPU clusters): 'host:port' of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-host: this process, 0-based.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {argv[1:]}')
  from fsjax import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  logging.set_verbosity(logging.INFO)
  for noisy in ('absl', 'jax', 'orbax'):
    py_logging.getLogger(noisy).setLevel(py_logging.WARNING)
  from fsjax import arcface_trainer  # pylint: disable=g-import-not-at-top
  result = arcface_trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if result['eval'] is not None:
    ev = result['eval']
    print(f"verification on unseen identities: accuracy {ev['accuracy']:.4f} (10-fold), "
          f"best-threshold {ev['best_accuracy']:.4f}, TAR@FAR={ev['far']:g} "
          f"{ev['tar_at_far']:.4f} ({int(ev['num_pairs'])} pairs)", flush=True)
  if result['identity_dir']:
    print(f"identity encoder: {result['identity_dir']}  (wall {result['wall_s']:.0f} s)",
          flush=True)
