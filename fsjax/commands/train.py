r"""`fsjax train --config configs/X.py --workdir DIR [--config.a.b=v ...]`: train AEI-Net.

Examples:
  fsjax train --config configs/synthetic.py --workdir ~/fsjax_runs/synthetic
  fsjax train --config configs/default.py --workdir /runs/fs256 \
    --config.identity.checkpoint=/models/arcface_r50 --config.dataset.name=aligned_faces/ffhq
  # GPU cluster, one command per host:
  fsjax train --config configs/gpu_8x.py --workdir /shared/run \
    --coordinator_address=host0:1234 --num_processes=2 --process_id=0

TPU pods are detected automatically (no multi-host flags). Re-running the same command
resumes from the newest checkpoint in --workdir. Bad input (an unknown --config.x, a missing
config file, bad values, an unknown or unbuilt dataset, no identity encoder, a workdir that is
a file, read-only or on a full disk) prints one line `fsjax train: error: ...`, exits 2 and
creates nothing; so does a workdir another run is using (`fsjax.lock`). Ctrl-C saves a
checkpoint of the current step and exits 130 (a second Ctrl-C stops at once); SIGTERM saves
and exits 0. The logic lives in fsjax.aei.trainer.
"""

from fsjax.commands import errors
from fsjax.commands import training_flags

_FLAGS = training_flags.define(__name__, 'Training config file (configs/*.py).',
                               'Run directory (checkpoints, logs, samples).')
# Config fields holding user paths, made absolute where the command runs.
PATH_FIELDS = ('identity.checkpoint', 'dataset.data_dir', 'dataset.manual_dir')


def main(argv):
  try:
    config, workdir = training_flags.start(_FLAGS, argv, PATH_FIELDS)
  except ValueError as e:
    return errors.fail('train', e)
  from fsjax.aei import trainer  # pylint: disable=g-import-not-at-top
  return training_flags.run('train', trainer, config, workdir)[0]
