"""`fsjax build NAME/CONFIG... [--data_dir D] [--manual_dir M]`: prepare TFDS datasets.

Examples:
  fsjax build synthetic_faces/64                      # offline, about a minute of CPU
  fsjax build synthetic_faces/pairs64 synthetic_faces/112
  fsjax build aligned_faces/folder --manual_dir ~/my_faces
  fsjax build aligned_faces/ffhq --manual_dir ~/ffhq --data_dir /data/tfds

Writes array_record without TensorFlow; progress bars come from TFDS. The logic lives in
fsjax.data.build.
"""

from absl import flags

from fsjax.commands import errors
from fsjax.data import build as build_lib
from fsjax.data import paths

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data dir (default ~/tensorflow_datasets).')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Folder with your files (aligned_faces: see its README).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Rebuild even if already prepared.')


def main(argv):
  names = argv[1:]
  if not names:
    return errors.fail('build', 'give a dataset: fsjax build NAME/CONFIG... [--data_dir D] '
                       '[--manual_dir M]')
  data_dir, manual_dir = (paths.absolute(f.value) if f.value else None
                          for f in (_DATA_DIR, _MANUAL_DIR))
  try:  # every name is checked before the first is built
    for name in names:
      build_lib.check_dataset(name, data_dir, manual_dir, overwrite=_OVERWRITE.value)
  except build_lib.DatasetError as e:
    return errors.fail('build', e)
  for name in names:
    builder = build_lib.build_dataset(name, data_dir=data_dir, manual_dir=manual_dir,
                                      overwrite=_OVERWRITE.value)
    splits = ', '.join(f'{k}: {v.num_examples}' for k, v in builder.info.splits.items())
    print(f'{name}: ready at {builder.data_dir} ({splits})')
