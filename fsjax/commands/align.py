"""`fsjax align IMAGE_OR_DIR... --output DIR [--mode ffhq|arcface] [--size 256] [--all-faces]`.

Writes aligned PNG crops and landmarks.json (see fsjax.faces.align_images), prints
progress and, at the end, every file that gave no face with the reason. Exit code 0
when at least one face was aligned, 2 when none (or on bad usage).
"""

import sys

from absl import flags

from fsjax.faces import align_images

_OUTPUT = flags.DEFINE_string('output', None, 'Folder for the crops and landmarks.json.')
_MODE = flags.DEFINE_enum('mode', 'ffhq', ['ffhq', 'arcface'],
                          'Alignment: ffhq (68 landmarks, whole face) or arcface (5-point '
                          'ArcFace template; at 256 the 112 ArcFace crop is rows/cols 19:237).')
_SIZE = flags.DEFINE_integer('size', 256, 'Crop side in pixels.')
_ALL_FACES = flags.DEFINE_bool('all_faces', False, 'Align every face, not only the largest.')
flags.DEFINE_alias('all-faces', 'all_faces')
_BORDER = flags.DEFINE_enum('border', None, ['constant', 'reflect', 'replicate'],
                            'Fill outside the photo (default: constant for arcface, reflect '
                            'for ffhq).')


def main(argv):
  inputs = argv[1:]
  if not inputs or not _OUTPUT.value:
    print('usage: fsjax align IMAGE_OR_DIR... --output DIR [--mode ffhq|arcface] '
          '[--size 256] [--all-faces]', file=sys.stderr)
    return 2
  report = align_images.align_paths(
      inputs, _OUTPUT.value, mode=_MODE.value, size=_SIZE.value, all_faces=_ALL_FACES.value,
      border=_BORDER.value, progress=align_images.print_progress())
  print(report.summary())
  return report.exit_code
