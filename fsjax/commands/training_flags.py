"""Flags and process set-up shared by `fsjax train` and `fsjax train-arcface`.

Both commands take --config (an ml_collections config file, overridable with
--config.a.b=v), --workdir and the multi-host flags for GPU clusters (TPU pods are
detected without them). The flags are registered under the calling command's module, so
`fsjax NAME --help` lists them.
"""

import dataclasses
import logging as py_logging

from absl import flags
from absl import logging
from ml_collections import config_flags


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


def start(holders: TrainingFlags, argv) -> None:
  """Joins the multi-host job (before anything touches a device) and sets up logging.

  fsjax logs through Python logging at INFO; the absl/JAX/Orbax internals only warn.
  """
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {argv[1:]}')
  from fsjax import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed(holders.coordinator_address.value,
                                  holders.num_processes.value, holders.process_id.value)
  logging.set_verbosity(logging.INFO)
  py_logging.getLogger().setLevel(py_logging.INFO)
  for noisy in ('absl', 'jax', 'orbax'):
    py_logging.getLogger(noisy).setLevel(py_logging.WARNING)
