"""`fsjax train-arcface --config configs/arcface_X.py --workdir DIR [--config.a.b=v ...]`.

Trains an ArcFace identity encoder (IResNet + additive angular margin loss) and writes
it to DIR/identity (identity.json + Orbax variables) for AEI-Net
(--config.identity.checkpoint=DIR/identity) and fsjax.load_identity_encoder.

Examples:
  fsjax train-arcface --config configs/arcface_synthetic.py --workdir ~/runs/arcface_synthetic
  fsjax train-arcface --config configs/arcface_r50.py --workdir /runs/arcface_r50 \
    --config.dataset.manual_dir=/data/faces_emore_aligned

synthetic_faces is rendered on first use. Re-running the same command resumes from the
newest checkpoint in --workdir. Bad input prints one line `fsjax train-arcface: error: ...`,
exits 2 and creates nothing; so does a workdir another run is using. Ctrl-C saves a
checkpoint and exits 130. The logic lives in fsjax.identity.trainer.
"""

from fsjax.commands import errors
from fsjax.commands import training_flags

_FLAGS = training_flags.define(__name__, 'ArcFace config file (configs/arcface_*.py).',
                               'Run directory (checkpoints, logs, identity/).')
# Config fields holding user paths, made absolute where the command runs.
PATH_FIELDS = ('dataset.data_dir', 'dataset.manual_dir', 'export_dir')


def main(argv):
  try:
    config, workdir = training_flags.start(_FLAGS, argv, PATH_FIELDS)
  except ValueError as e:
    return errors.fail('train-arcface', e)
  from fsjax.identity import trainer as arcface_trainer  # pylint: disable=g-import-not-at-top
  code, result = training_flags.run('train-arcface', arcface_trainer, config, workdir)
  if code:
    return code
  if result['eval'] is not None:
    ev = result['eval']
    print(f"verification on unseen identities: accuracy {ev['accuracy']:.4f} (10-fold), "
          f"best-threshold {ev['best_accuracy']:.4f}, TAR@FAR={ev['far']:g} "
          f"{ev['tar_at_far']:.4f} ({int(ev['num_pairs'])} pairs)", flush=True)
  if result['identity_dir']:
    print(f"identity encoder: {result['identity_dir']}  (wall {result['wall_s']:.0f} s)",
          flush=True)
