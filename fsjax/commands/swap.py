"""fsjax swap: put the face from --source photo(s) onto the face(s) in a --target image or video.

  fsjax swap --checkpoint EXPORT_DIR --source a.jpg [--source b.jpg ...]
      --target t.jpg|clip.mp4 --output out.png|out.jpg|out.mp4
      [--faces largest|all|N] [--mask_blur 0.05] [--mask_erosion 0.05]

Every output is marked as synthetic media: PNG and JPEG files carry XMP metadata with the
IPTC DigitalSourceType trainedAlgorithmicMedia, MP4 files a comment/description tag saying so.
PNG outputs keep every pixel outside the face mask; JPEG outputs are re-encoded as a whole
(lossy), so pixels outside the mask change slightly (about one level): use .png for exact.
Videos keep their frame rate and audio; frames without a face are copied unchanged. Faces
are detected every --detect_every frames and tracked in between; in a video, --faces N is
person N (numbered by first appearance, largest first) in every frame that shows them.
Outputs are written to a temporary file and moved into place only when complete (Ctrl-C and
SIGTERM leave nothing behind).
Bad input (missing or unreadable file, no face in a source or in the target image, a face
index that does not exist, a missing or incompatible checkpoint, an unsupported video, a
video that stops decoding part-way without --allow_partial) prints one line
`fsjax swap: error: ...` and exits with code 2, writing nothing.
"""

import sys

from absl import flags
from absl import logging

from fsjax.swap import files as swap_files
from fsjax.commands import errors

_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'Directory written by `fsjax export` (or a training workdir: the '
    'latest checkpoint, EMA weights).')
_SOURCE = flags.DEFINE_multi_string(
    'source', [], 'Photo of the person whose face is put in; repeat for several photos of '
    'the same person (their identity embeddings are averaged).')
_TARGET = flags.DEFINE_string('target', None, 'Image or video whose face(s) are replaced.')
_OUTPUT = flags.DEFINE_string(
    'output', None, 'Output .png/.jpg/.jpeg (image target) or .mp4 (video target). Marked as '
    'synthetic media: XMP IPTC DigitalSourceType trainedAlgorithmicMedia (images), '
    'comment/description tag (MP4). PNG keeps every pixel outside the face mask unchanged; '
    'JPEG re-encodes the whole image (lossy: pixels outside the mask change by about one '
    'level), so use .png for an exact copy around the face.')
_FACES = flags.DEFINE_string(
    'faces', 'largest', "Target faces to replace: 'largest', 'all' or an index (0 = largest, "
    'the order of `fsjax align`).')
_MASK_BLUR = flags.DEFINE_float(
    'mask_blur', None, 'Feathering of the paste-back mask: Gaussian sigma as a fraction of the '
    'face size (default 0.05).')
_MASK_EROSION = flags.DEFINE_float(
    'mask_erosion', None, 'Shrinks the paste-back mask by this fraction of the face size '
    '(default 0.05).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Video: faces per model batch.')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show video progress (frames/s, ETA).')
_ALLOW_PARTIAL = flags.DEFINE_bool(
    'allow_partial', False, 'Video: write the decoded frames of a video that stops decoding '
    'part-way (a truncated file); without it such a video is an error and nothing is written.')
_DETECT_EVERY = flags.DEFINE_integer(
    'detect_every', 10, 'Video: run the face detector at least every N frames (and whenever '
    'tracking loses a face or the scene cuts); faces are tracked in between. 1 = every frame.')
_NO_HEAR = flags.DEFINE_bool(
    'no_hear', False, 'Skip the export\'s HEAR-Net (stage 2) when it has one: AEI-Net alone.')
_DETECT_SIZE = flags.DEFINE_integer(
    'detect_size', 640, 'Video: the detector sees frames downscaled to this long side (faces '
    'down to about 80 px at that size, landmarks fitted at full resolution); 0 = full size.')


def main(argv):
  if len(argv) > 1:
    return errors.fail('swap', f'unexpected arguments: {" ".join(argv[1:])}')
  missing = [name for name, flag in (('--checkpoint', _CHECKPOINT), ('--target', _TARGET),
                                     ('--output', _OUTPUT)) if not flag.value]
  if not _SOURCE.value:
    missing.insert(1, '--source')
  if missing:
    return errors.fail('swap', f'missing {", ".join(missing)} (see fsjax swap --help)')
  logging.set_verbosity(logging.ERROR)
  try:
    stats = swap_files.swap_files(
        _CHECKPOINT.value, _SOURCE.value, _TARGET.value, _OUTPUT.value, faces=_FACES.value,
        mask_blur=_MASK_BLUR.value, mask_erosion=_MASK_EROSION.value,
        batch_size=_BATCH_SIZE.value, progress=_PROGRESS.value,
        allow_partial=_ALLOW_PARTIAL.value, detect_every=_DETECT_EVERY.value,
        detect_max_side=_DETECT_SIZE.value, hear=not _NO_HEAR.value)
  except swap_files.USER_ERRORS as e:
    return errors.fail('swap', str(e))
  if stats['kind'] == 'video':
    if stats.get('partial'):
      print(f'fsjax swap: warning: {stats["partial_message"]}; wrote the {stats["frames"]} '
            'decoded frames (--allow_partial)', file=sys.stderr)
    print(f'wrote {stats["output"]}: {stats["frames"]} frames at {stats["fps"]:g} fps, '
          f'{stats["faces_swapped"]} faces swapped, {stats["frames_without_face"]} frames '
          f'without a face passed through unchanged ({stats["frames"] / stats["seconds"]:.2f} '
          'frames/s); marked as synthetic media')
  else:
    print(f'wrote {stats["output"]}: {stats["faces_swapped"]} face(s) swapped; marked as '
          'synthetic media')
  return 0
