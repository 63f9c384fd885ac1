"""fsjax export: write a self-contained swapper (EMA generator + identity encoder + config).

  fsjax export --workdir TRAIN_WORKDIR --output EXPORT_DIR [--step N] [--overwrite]
      [--hear HEAR_WORKDIR]

The export loads with `fsjax.load_swapper(EXPORT_DIR)` or `fsjax swap --checkpoint
EXPORT_DIR` without the training code. EXPORT_DIR must lie outside TRAIN_WORKDIR (and not
contain it); --overwrite replaces only an earlier export (a folder with swapper.json). An
unreadable newest checkpoint is skipped with one warning naming the step used. Swaps made from it are marked as synthetic media
(see `fsjax swap --help`). --hear adds the HEAR-Net of a `fsjax train-hear` workdir (stage 2),
which the swapper then applies by default (`fsjax swap --no_hear` to compare).
"""

import json
import os

from absl import flags
from absl import logging

from fsjax.commands import errors
from fsjax.data import paths
from fsjax.swap import export

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (or an export to copy).')
_OUTPUT = flags.DEFINE_string('output', None, 'Export directory to create.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest readable).')
_HEAR = flags.DEFINE_string('hear', None, 'A `fsjax train-hear` workdir whose HEAR-Net joins '
                            'the export (stage 2).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False,
                               'Replace an existing --output that is an earlier export.')


def main(argv):
  if len(argv) > 1:
    return errors.fail('export', f'unexpected arguments: {" ".join(argv[1:])}')
  if not _WORKDIR.value or not _OUTPUT.value:
    return errors.fail('export', 'give --workdir and --output (see fsjax export --help)')
  logging.set_verbosity(logging.ERROR)
  try:
    out = export.export_swapper(_WORKDIR.value, _OUTPUT.value, step=_STEP.value,
                                overwrite=_OVERWRITE.value, hear=_HEAR.value)
  except (export.ExportError, paths.OutputError) as e:
    return errors.fail('export', str(e))
  with open(os.path.join(out, export.META_FILE)) as f:
    meta = json.load(f)
  print(f'exported {out}: {meta["image_size"]} px, alignment {meta["alignment"]}, '
        f'step {meta["source"].get("step")}'
        + (f', HEAR-Net step {meta["hear"]["source"]["step"]}' if 'hear' in meta else ''))
  return 0
