"""fsjax swap: put the face from --source photo(s) onto the face(s) in a --target image or video.

  fsjax swap --checkpoint EXPORT_DIR --source a.jpg [--source b.jpg ...]
      --target t.jpg|clip.mp4 --output out.png|out.jpg|out.mp4
      [--faces largest|all|N] [--mask_blur 0.05] [--mask_erosion 0.05]

Every output is marked as synthetic media: PNG and JPEG files carry XMP metadata with the
IPTC DigitalSourceType trainedAlgorithmicMedia, MP4 files a comment/description tag saying so.
Videos keep their frame rate and audio; frames without a face are copied unchanged. Outputs
are written to a temporary file and moved into place only when complete.
Bad input (missing or unreadable file, no face in a source or in the target image, a face
index that does not exist, a missing or incompatible checkpoint, an unsupported video) prints
one line `fsjax swap: error: ...` and exits with code 2.
"""


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
    'comment/description tag (MP4).')
_FACES = flags.DEFINE_string(
    'faces', 'largest', "Target faces to replace: 'largest', 'all' or an index (0 = largest, "
    'the order of `fsjax align`).')
_MASK_BLUR = flags.DEFINE_float(
    'mask_blur', None, 'Feathering of the paste-back mask: Gaussian sigma as a fraction of the '
    'face size (default 0.05).')
_MASK_EROSION = flags.DEFINE_float(
    'mask_erosion', None, 'Shrinks the paste-back mask by this fraction of the face size '
    '(default 0.05).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Video frames per model batch.')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show video progress (frames/s, ETA).')


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
        batch_size=_BATCH_SIZE.value, progress=_PROGRESS.value)
  except swap_files.USER_ERRORS as e:
    return errors.fail('swap', str(e))
  if stats['kind'] == 'video':
    print(f'wrote {stats["output"]}: {stats["frames"]} frames at {stats["fps"]:g} fps, '
          f'{stats["faces_swapped"]} faces swapped, {stats["frames_without_face"]} frames '
          f'without a face passed through unchanged ({stats["frames"] / stats["seconds"]:.2f} '
          'frames/s); marked as synthetic media')
  else:
    print(f'wrote {stats["output"]}: {stats["faces_swapped"]} face(s) swapped; marked as '
          'synthetic media')
  return 0
