"""Photo files -> aligned face records for tfds_builders/aligned_faces (bad files counted).

`crop_records(options, root, items)` reads, converts, validates, detects, aligns and PNG-encodes
a chunk of files and returns the records plus what it skipped and converted, so the builder
can run chunks in worker processes (each creating its own detector) and merge the reports.
"""

import collections
import dataclasses
import io
from typing import Any, Optional, Sequence

import cv2
from etils import epath
import numpy as np

from fsjax.data import image_io
from fsjax.data import tfds_utils

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


@dataclasses.dataclass(frozen=True)
class CropOptions:
  """How faces are cut out (see AlignedFacesConfig for the meaning of each field)."""
  size: int = 256
  alignment: str = 'ffhq'  # 'none' | 'ffhq' | 'arcface' | 'ghost224'
  all_faces: bool = False
  min_face: int = 40
  max_pixels: int = 0  # 0: fsjax's cap for every command, image_io.pixel_cap()
  min_side: int = 32


@dataclasses.dataclass
class ChunkReport:
  """Counts for one chunk of files (merged by the builder into a split report)."""
  files: int = 0
  examples: int = 0
  faces: int = 0
  small_faces: int = 0
  extra_faces: int = 0
  converted: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  skipped: list = dataclasses.field(default_factory=list)  # (relative path, reason)


def crop_records(options: CropOptions, root: str, items: Sequence[tuple[str, int]],
                 detector: Optional[Any] = None) -> tuple[list, ChunkReport]:
  """Makes the records of some files.

  Args:
    options: crop options.
    root: folder the relative paths start from.
    items: (relative path, label) per file.
    detector: a fsjax.faces detector; None creates a DlibDetector when one is needed.

  Returns:
    (records, report): records are (key, {'image': PNG bytes of uint8 [S, S, 3],
    'label': int, 'landmarks5': float32 [5, 2] in crop pixels (-1 when not detected),
    'source': relative path}); the key is 'path#face_index'.
  """
  report = ChunkReport()
  records = []
  for rel, label in items:
    report.files += 1
    try:
      data = (epath.Path(root) / rel).read_bytes()
      report.converted.update(conversions(data))
      image = image_io.load_rgb(data, max_pixels=options.max_pixels)
    except (ValueError, OSError) as e:
      report.skipped.append((rel, image_io.error_reason(e)))
      continue
    try:
      if options.alignment == 'none':
        crops, reason = _resize_aligned(image, options)
      else:
        if detector is None:
          from fsjax import faces as faces_lib  # pylint: disable=g-import-not-at-top
          detector = faces_lib.DlibDetector()
        crops, reason = _detect_and_align(image, options, detector, report)
    except Exception as e:  # pylint: disable=broad-except
      crops, reason = [], f'processing failed ({type(e).__name__})'
    if reason:
      report.skipped.append((rel, reason))
    for index, (crop, landmarks) in enumerate(crops):
      report.examples += 1
      records.append((f'{rel}#{index}', {
          'image': tfds_utils.encode_png(crop),
          'label': label,
          'landmarks5': landmarks,
          'source': rel,
      }))
  return records, report


def _resize_aligned(image: np.ndarray, options: CropOptions):
  """An already aligned image: validate (size, square) and resize."""
  height, width = image.shape[:2]
  if min(height, width) < options.min_side:
    return [], 'too small'
  if abs(height - width) > 0.02 * max(height, width):
    return [], 'not square'
  shrink = max(height, width) > options.size
  crop = cv2.resize(image, (options.size, options.size),
                    interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
  return [(crop, np.full((5, 2), -1.0, np.float32))], None


def _detect_and_align(image: np.ndarray, options: CropOptions, detector, report: ChunkReport):
  from fsjax import faces as faces_lib  # pylint: disable=g-import-not-at-top
  found = detector.detect(image)
  report.faces += len(found)
  if not found:
    return [], 'no face'
  big = [f for f in found if f.box[2] - f.box[0] >= options.min_face]
  if not big:
    return [], 'face too small'
  report.small_faces += len(found) - len(big)
  if not options.all_faces:
    report.extra_faces += len(big) - 1
    big = big[:1]  # detect() sorts the largest first
  crops = []
  for face in big:
    crop, m = faces_lib.align_face(image, face, options.alignment, options.size)
    crops.append((crop, faces_lib.transform_points(m, face.landmarks5).astype(np.float32)))
  return crops, None


def conversions(data: bytes) -> list[str]:
  """What load_rgb converts in this file, for reports: '16-bit', 'grayscale', 'CMYK',
  'alpha', 'palette' or another Pillow mode; [] for plain 8-bit RGB or unreadable data."""
  out = []
  if data[:8] == _PNG_SIGNATURE and len(data) > 24 and data[24] == 16:
    out.append('16-bit')
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with Image.open(io.BytesIO(data)) as im:
      mode = im.mode
      transparent = 'transparency' in im.info
  except Exception:  # pylint: disable=broad-except
    return out  # load_rgb reports why it cannot read the file.
  if mode in ('L', 'I;16', 'I;16B', 'I;16L', 'I', 'F', '1'):
    out.append('grayscale')
  elif mode == 'CMYK':
    out.append('CMYK')
  elif mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or (mode == 'P' and transparent):
    out.append('alpha')
  elif mode == 'P':
    out.append('palette')
  elif mode != 'RGB':
    out.append(mode)
  if mode.startswith('I;16') and '16-bit' not in out:
    out.append('16-bit')
  return out
