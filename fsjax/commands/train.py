r"""`fsjax train --config configs/X.py --workdir DIR [--config.a.b=v ...]`: train AEI-Net.

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

from fsjax.commands import training_flags

_FLAGS = training_flags.define(__name__, 'Training config file (configs/*.py).',
                               'Run directory (checkpoints, logs, samples).')


def main(argv):
  training_flags.start(_FLAGS, argv)
  from fsjax import trainer  # pylint: disable=g-import-not-at-top
  trainer.train_and_evaluate(_FLAGS.config.value, _FLAGS.workdir.value)
