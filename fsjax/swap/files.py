"""File-level swapping behind `fsjax swap`: checks every input first, then writes a marked output.

`swap_files` validates the output path, the source photos, the target (image or video) and the
checkpoint before any model work, so bad input fails fast with one `SwapInputError` whose
message is meant for the user; outputs are written atomically (no partial file on failure) and
marked as synthetic media (fsjax.swap.provenance).
"""

import os
from typing import Callable, Optional, Sequence

from fsjax.data import paths
from fsjax.swap import export
from fsjax.swap import provenance
from fsjax.swap import swapper as swapper_lib
from fsjax.swap import video
from fsjax.faces import detect
from fsjax.swap.swapper import SwapInputError

USER_ERRORS = (SwapInputError, export.ExportError, video.VideoError)


def _check_output(output: str, is_video: bool, inputs: Sequence[str]) -> None:
  ext = os.path.splitext(output)[1].lower()
  if is_video and ext not in video.OUTPUT_VIDEO_EXTENSIONS:
    raise SwapInputError(f'the target is a video: the output must be .mp4, got {output}')
  if not is_video and ext not in provenance.IMAGE_EXTENSIONS:
    raise SwapInputError(f'the target is an image: the output must be .png, .jpg or .jpeg, '
                         f'got {output}')
  folder = os.path.dirname(os.path.abspath(output))
  if not os.path.isdir(folder):
    raise SwapInputError(f'output folder does not exist: {folder}')
  if not os.access(folder, os.W_OK):
    raise SwapInputError(f'output folder is not writable: {folder}')
  if os.path.isdir(output):
    raise SwapInputError(f'output is a directory: {output}')
  found = paths.overlap(output, [path for path in inputs if os.path.exists(path)])
  if found:
    raise SwapInputError(f'output would overwrite an input: {output} {found[1]} {found[0]}')


def swap_files(checkpoint: str, sources: Sequence[str], target: str, output: str, *,
               faces: swapper_lib.FaceSelection = 'largest', mask_blur: Optional[float] = None,
               mask_erosion: Optional[float] = None, batch_size: int = 8,
               progress: bool = True, allow_partial: bool = False, detect_every: int = 10,
               detect_max_side: int = 640, hear: bool = True,
               load: Callable[..., swapper_lib.Swapper] = swapper_lib.load_swapper) -> dict:
  """Swaps the face in `sources` onto the target image or video and writes `output`.

  Args:
    checkpoint: export directory (or training workdir).
    sources: photos of the source person (identity embeddings averaged).
    target: an image, or a video (by extension, see fsjax.swap.video.VIDEO_EXTENSIONS).
    output: .png / .jpg / .jpeg for an image target, .mp4 for a video target.
    faces: 'largest', 'all' or a face index (largest first).
    mask_blur, mask_erosion: blend-mask options (fractions of the face size; None = defaults).
    batch_size: video frames per model batch.
    progress: video progress (frames/s, ETA) on stderr.
    allow_partial: write a video that stops decoding part-way (else VideoError, nothing written).
    detect_every, detect_max_side: video face tracking (see fsjax.swap.video.swap_video).
    hear: refine with the export's HEAR-Net when it has one (False: AEI-Net alone).
    load: swapper loader, called as load(checkpoint, detector=...) (tests pass a cached one).

  Returns:
    dict: kind ('image' | 'video'), output, faces_swapped, and for videos frames,
    frames_without_face, fps, width, height, seconds.

  Raises:
    SwapInputError, export.ExportError, video.VideoError: bad input (nothing written).
  """
  faces = swapper_lib.parse_selection(faces)
  for name, value in (('mask_blur', mask_blur), ('mask_erosion', mask_erosion)):
    if value is not None and not 0.0 <= value <= 1.0:
      raise SwapInputError(f'{name} must be in [0, 1] (a fraction of the face size), '
                           f'got {value}')
  if not sources:
    raise SwapInputError('give at least one --source photo')
  is_video = video.is_video_path(target)
  _check_output(output, is_video, list(sources) + [target, checkpoint])
  export.check_dir(checkpoint)
  source_images = [swapper_lib.to_rgb(path, path) for path in sources]
  if is_video:
    try:
      video.read_video_info(target)
    except FileNotFoundError as e:
      raise SwapInputError(f'file not found: {target}') from e
  else:
    target_image = swapper_lib.to_rgb(target, target)
  # Face checks before any model work, so bad input fails fast.
  detector = detect.DlibDetector()
  source_faces = [swapper_lib.source_face(detector, image, path)
                  for image, path in zip(source_images, sources)]
  if not is_video:
    chosen = swapper_lib.target_faces(detector, target_image, faces, target)
  swapper = load(checkpoint, detector=detector)
  swapper.use_hear = swapper.has_hear and hear
  identity = swapper.identity(source_images, names=list(sources), detected=source_faces)
  if is_video:
    stats = video.swap_video(swapper, identity, target, output, faces=faces,
                             mask_blur=mask_blur, mask_erosion=mask_erosion,
                             batch_size=batch_size, progress=progress,
                             allow_partial=allow_partial, detect_every=detect_every,
                             detect_max_side=detect_max_side)
    stats.update(kind='video', output=output)
    return stats
  result = swapper.swap(identity, target_image, faces=chosen, mask_blur=mask_blur,
                        mask_erosion=mask_erosion, return_crops=True, target_name=target)
  provenance.save_image(output, result.image)
  return {'kind': 'image', 'output': output, 'faces_swapped': len(result.faces),
          'width': result.image.shape[1], 'height': result.image.shape[0]}
