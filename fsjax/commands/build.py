"""`fsjax build NAME/CONFIG... [--data_dir D] [--manual_dir M]`: prepare TFDS datasets.

Examples:
  fsjax build synthetic_faces/64                      # offline, about a minute of CPU
  fsjax build synthetic_faces/pairs64 synthetic_faces/112
  fsjax build aligned_faces/folder --manual_dir ~/my_faces
  fsjax build aligned_faces/ffhq --manual_dir ~/ffhq --data_dir /data/tfds

Writes array_record without TensorFlow; progress bars come from TFDS. The logic lives in
fsjax.data.build.
"""

from absl import app
from absl import flags

from fsjax.data import build as build_lib

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data dir (default ~/tensorflow_datasets).')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Folder with your files (aligned_faces: see its README).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Rebuild even if already prepared.')


def main(argv):
  names = argv[1:]
  if not names:
    raise app.UsageError('usage: fsjax build NAME/CONFIG... [--data_dir D] [--manual_dir M]')
  for name in names:
    builder = build_lib.build_dataset(name, data_dir=_DATA_DIR.value,
                                      manual_dir=_MANUAL_DIR.value, overwrite=_OVERWRITE.value)
    splits = ', '.join(f'{k}: {v.num_examples}' for k, v in builder.info.splits.items())
    print(f'{name}: ready at {builder.data_dir} ({splits})')
