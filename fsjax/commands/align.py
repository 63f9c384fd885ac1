"""`fsjax align IMAGE_OR_DIR... --output DIR [--mode ffhq|arcface|ghost224] [--size 256]
[--all-faces]`.

Writes aligned PNG crops and landmarks.json (see fsjax.faces.align_images), prints
progress and, at the end, every file that gave no face with the reason. Exit code 0
when at least one face was aligned, 2 when none (or on bad usage: one line
`fsjax align: error: ...`). The photos are never modified: --output must not be, contain or
lie inside an input, and --overwrite replaces only an earlier align output (a folder with
landmarks.json). Images above FSJAX_MAX_PIXELS (default 100 Mpx) are skipped unread.
"""

from absl import flags

from fsjax.commands import errors
from fsjax.data import paths
from fsjax.faces import align_images

_OUTPUT = flags.DEFINE_string('output', None, 'Folder for the crops and landmarks.json.')
_MODE = flags.DEFINE_enum('mode', 'ffhq', ['ffhq', 'arcface', 'ghost224'],
                          'Alignment: ffhq (68 landmarks, whole face), arcface (5-point '
                          'ArcFace template; at 256 the 112 ArcFace crop is rows/cols 19:237) '
                          "or ghost224 (GHOST's: the 112 template x 2 in a 224 crop, resized "
                          'to --size; what converted GHOST generators expect at 256).')
_SIZE = flags.DEFINE_integer('size', 256, 'Crop side in pixels.',
                             lower_bound=align_images.MIN_SIZE)
_ALL_FACES = flags.DEFINE_bool('all_faces', False, 'Align every face, not only the largest.')
flags.DEFINE_alias('all-faces', 'all_faces')
_OVERWRITE = flags.DEFINE_bool('overwrite', False,
                               'Replace --output if it is an earlier align output.')
_BORDER = flags.DEFINE_enum('border', None, ['constant', 'reflect', 'replicate'],
                            'Fill outside the photo (default: constant for arcface and '
                            'ghost224, reflect for ffhq).')


def main(argv):
  inputs = argv[1:]
  if not inputs or not _OUTPUT.value:
    return errors.fail('align', 'usage: fsjax align IMAGE_OR_DIR... --output DIR '
                       '[--mode ffhq|arcface|ghost224] [--size 256] [--all-faces] '
                       '[--overwrite]')
  try:
    report = align_images.align_paths(
        inputs, _OUTPUT.value, mode=_MODE.value, size=_SIZE.value, all_faces=_ALL_FACES.value,
        border=_BORDER.value, overwrite=_OVERWRITE.value, progress=align_images.print_progress())
  except paths.OutputError as e:
    return errors.fail('align', e)
  print(report.summary())
  return report.exit_code
