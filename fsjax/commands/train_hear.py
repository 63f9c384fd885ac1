r"""`fsjax train-hear --config configs/hear_X.py --workdir DIR --aei AEI_DIR`: train HEAR-Net.

Examples:
  fsjax train-hear --config configs/hear_synthetic.py --workdir workdirs/hear_synthetic \
    --aei workdirs/synthetic
  fsjax train-hear --config configs/hear_default.py --workdir /runs/hear256 --aei /exports/fs256

--aei is the frozen stage 1: an AEI-Net export (`fsjax export`, `fsjax convert-generator`) or
training workdir (its newest checkpoint's EMA generator). Re-running the same command resumes
from the newest checkpoint in --workdir; bad input prints one line and exits 2, Ctrl-C saves
a checkpoint and exits 130. The logic lives in fsjax.aei.hear_trainer; `fsjax export
--workdir AEI_DIR --hear DIR` puts the result into an export.
"""

from absl import flags

from fsjax.commands import errors
from fsjax.commands import training_flags
from fsjax.data import paths

_FLAGS = training_flags.define(__name__, 'HEAR-Net config file (configs/hear_*.py).',
                               'Run directory (hear_checkpoints, logs, samples).')
_AEI = flags.DEFINE_string('aei', None, 'The frozen AEI-Net: an export or a training workdir.')
flags.mark_flag_as_required('aei')
PATH_FIELDS = ('dataset.data_dir', 'dataset.manual_dir', 'hear.occluders_dir')


class _Runner:
  """hear_trainer with its stage 1 bound, in the shape training_flags.run expects."""

  def __init__(self, stage1):
    # pylint: disable=g-import-not-at-top
    from fsjax.aei import hear_trainer
    self._trainer, self._stage1 = hear_trainer, stage1
    self.BAD_INPUT = hear_trainer.BAD_INPUT  # pylint: disable=invalid-name

  def check_run(self, config, workdir):
    return self._trainer.check_run(config, workdir, self._stage1)

  def train_and_evaluate(self, config, workdir):
    return self._trainer.train_and_evaluate(config, workdir, self._stage1)


def main(argv):
  try:
    config, workdir = training_flags.start(_FLAGS, argv, PATH_FIELDS)
  except ValueError as e:
    return errors.fail('train-hear', e)
  # pylint: disable=g-import-not-at-top
  from fsjax.aei import hear_trainer
  from fsjax.swap import export
  aei = paths.absolute(_AEI.value)
  try:
    stage1 = hear_trainer.stage1_from_bundle(export.load_bundle(aei), aei)
  except export.ExportError as e:
    return errors.fail('train-hear', e)
  return training_flags.run('train-hear', _Runner(stage1), config, workdir)[0]
