"""Flags and process set-up shared by `fsjax train` and `fsjax train-arcface`.

Both commands take --config (an ml_collections config file, overridable with
--config.a.b=v), --workdir and the multi-host flags for GPU clusters (TPU pods are
detected without them). The flags are registered under the calling command's module, so
`fsjax NAME --help` lists them.
"""

import dataclasses
import logging as py_logging
import os
import sys
from typing import Any

from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from fsjax.commands import errors
from fsjax.data import paths


@dataclasses.dataclass(frozen=True)
class TrainingFlags:
  """Flag holders (read .value after absl parsed argv)."""
  config: flags.FlagHolder
  workdir: flags.FlagHolder
  coordinator_address: flags.FlagHolder
  num_processes: flags.FlagHolder
  process_id: flags.FlagHolder


def define(module_name: str, config_help: str, workdir_help: str) -> TrainingFlags:
  """Defines --config, --workdir (both required) and the multi-host flags for a command."""
  holders = TrainingFlags(
      config=config_flags.DEFINE_config_file('config', None, config_help, lock_config=True),
      workdir=flags.DEFINE_string('workdir', None, workdir_help, module_name=module_name),
      coordinator_address=flags.DEFINE_string(
          'coordinator_address', '', "Multi-host (GPU clusters): 'host:port' of process 0.",
          module_name=module_name),
      num_processes=flags.DEFINE_integer('num_processes', None,
                                         'Multi-host: number of processes.',
                                         module_name=module_name),
      process_id=flags.DEFINE_integer('process_id', None, 'Multi-host: this process, 0-based.',
                                      module_name=module_name))
  # DEFINE_config_file takes no module_name: file the flag under the command by hand.
  flags.FLAGS.register_flag_by_module(module_name, flags.FLAGS['config'])
  flags.mark_flags_as_required(['config', 'workdir'])
  return holders


def start(holders: TrainingFlags, argv, path_fields=()
          ) -> tuple[ml_collections.ConfigDict, str]:
  """Checks the command line, joins the multi-host job (before anything touches a device)
  and sets up logging.

  fsjax logs through Python logging at INFO; the absl/JAX/Orbax internals only warn.

  Args:
    holders: the command's flags.
    argv: what absl left of the command line (the program name only, when all is well).
    path_fields: dotted config fields holding user paths ('dataset.data_dir'); made absolute
      (relative to where the command runs) so the run, and everything reading its saved
      config later, finds them from any directory.

  Returns:
    (config, absolute workdir).

  Raises:
    ValueError: unexpected arguments, or a config file that is missing or does not load.
  """
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = holders.config.value
  if not isinstance(config, ml_collections.ConfigDict):
    filename = flags.FLAGS[holders.config.name].config_filename
    if not os.path.isfile(filename):
      raise ValueError(f'config file not found: {filename} (give one of the configs/*.py '
                       'files, e.g. --config configs/synthetic.py)')
    try:
      config.lock()  # raises the error that kept the file from loading
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'cannot load config file {filename}: {e}') from None
  for field in path_fields:
    parent, _, name = field.rpartition('.')
    node = config
    for part in filter(None, parent.split('.')):
      node = node[part]
    if node[name]:
      node[name] = paths.absolute(node[name])
  workdir = paths.absolute(holders.workdir.value)
  from fsjax.train import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed(holders.coordinator_address.value,
                                  holders.num_processes.value, holders.process_id.value)
  logging.set_verbosity(logging.INFO)
  py_logging.getLogger().setLevel(py_logging.INFO)
  for noisy in ('absl', 'jax', 'orbax'):
    py_logging.getLogger(noisy).setLevel(py_logging.WARNING)
  return config, workdir


def run(command: str, trainer: Any, config: ml_collections.ConfigDict,
        workdir: str) -> tuple[int, Any]:
  """`trainer.check_run`, then `trainer.train_and_evaluate` (a trainer module).

  Returns:
    (exit code, what train_and_evaluate returned or None): 2 with one line
    'fsjax COMMAND: error: ...' for bad input (trainer.BAD_INPUT, nothing created) or a
    workdir another run holds; 130 after Ctrl-C (the checkpoint, if any, is saved).
  """
  from fsjax.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  try:
    trainer.check_run(config, workdir)
  except trainer.BAD_INPUT as e:
    return errors.fail(command, e), None
  try:
    return 0, trainer.train_and_evaluate(config, workdir)
  except workdir_lib.WorkdirError as e:
    return errors.fail(command, e), None
  except KeyboardInterrupt as e:
    print(f'fsjax {command}: interrupted{f" ({e})" if str(e) else ""}; run the same command '
          'to resume from the last checkpoint', file=sys.stderr, flush=True)
    return 130, None
