"""Aligns the faces in photos and folders: PNG crops plus landmarks.json (`fsjax align`).

`align_paths` is the library function behind the command (and usable from Colab). For
each input photo it detects faces, aligns the largest (or all), writes
`<name>.png` (`<name>_<k>.png` with all_faces, k = 0 for the largest face) and records,
per output file, in `landmarks.json`:

  {"mode": "ffhq", "size": 256, "border": "reflect",
   "files": {"obama.png": {"source": "/abs/obama.jpg", "face_index": 0,
                           "faces_in_image": 1, "box": [x0, y0, x1, y1], "score": 1.9,
                           "detector": "hog", "landmarks5": [[x, y] x 5],
                           "landmarks68": [[x, y] x 68], "affine": [[a, b, tx], [c, d, ty]],
                           "landmarks5_crop": [[x, y] x 5]}, ...},
   "failures": [{"source": "/abs/bad.jpg", "reason": "empty file", "detail": "..."}]}

The output folder is written under a temporary name beside it and renamed when complete; it
must not be, contain or lie inside an input, and an existing one is replaced (overwrite=True)
only when it is an earlier align output (has landmarks.json).

Landmarks and box are in source-image pixels (after EXIF rotation); `affine` maps source
pixels to crop pixels. Files that cannot be read and photos without a face are listed
under "failures" (reasons: 'missing file', 'empty file', 'truncated image', 'not an image',
'image too large', 'unsupported image mode', 'unreadable', 'no face').
"""

import collections
import dataclasses
import json
import os
import sys
import time
from typing import Callable, Iterable, Optional, Sequence, TextIO

import numpy as np

from fsjax.data import image_io
from fsjax.data import paths
from fsjax.faces import align as align_lib
from fsjax.faces import detect as detect_lib

IMAGE_EXTENSIONS = frozenset(('.jpg', '.jpeg', '.jpe', '.png', '.bmp', '.gif', '.tif', '.tiff',
                              '.webp', '.ppm', '.pgm', '.pnm', '.pbm'))
NO_FACE = 'no face'
LANDMARKS_FILE = 'landmarks.json'
MIN_SIZE = 8  # smallest crop side

ProgressFn = Callable[[int, int, str, str], None]


@dataclasses.dataclass
class AlignReport:
  """What `align_paths` did.

  Attributes:
    output_dir: where crops and landmarks.json were written.
    images: input files tried (found in folders or named directly).
    faces_aligned: crops written.
    files: output file name -> landmarks.json record.
    failures: (source path, reason, detail) for every file that gave no crop.
    ignored: files in input folders skipped for their extension (not image names).
    seconds: wall time.
  """
  output_dir: str
  images: int = 0
  faces_aligned: int = 0
  files: dict = dataclasses.field(default_factory=dict)
  failures: list = dataclasses.field(default_factory=list)
  ignored: int = 0
  seconds: float = 0.0

  @property
  def exit_code(self) -> int:
    """0 when at least one face was aligned, else 2."""
    return 0 if self.faces_aligned > 0 else 2

  def summary(self) -> str:
    """Human-readable end-of-run summary listing every failure with its reason."""
    lines = [f'aligned {self.faces_aligned} face(s) from {self.images} file(s) into '
             f'{self.output_dir} in {self.seconds:.1f}s']
    if self.ignored:
      lines.append(f'ignored {self.ignored} file(s) in input folders without an image '
                   'extension')
    if self.failures:
      counts = collections.Counter(reason for _, reason, _ in self.failures)
      lines.append(f'{len(self.failures)} file(s) gave no face: ' +
                   ', '.join(f'{n} {reason}' for reason, n in sorted(counts.items())))
      for path, reason, detail in self.failures:
        lines.append(f'  {path}: {reason}' + (f' ({detail})' if detail else ''))
    return '\n'.join(lines)


def collect_inputs(inputs: Iterable[str]) -> tuple[list[tuple[str, str]], int]:
  """Expands files and folders (recursively, sorted) into (path, output name stem).

  Files named directly are always tried; files inside folders only when their extension
  is an image extension. Stems: the file name without extension; for files in folders,
  the path relative to the folder with separators replaced by '_'.

  Returns:
    ([(path, stem)], number of folder files ignored for their extension).
  """
  found, ignored = [], 0
  for item in inputs:
    item = os.fspath(item)
    if os.path.isdir(item):
      for root, dirs, names in os.walk(item):
        dirs.sort()
        for name in sorted(names):
          path = os.path.join(root, name)
          if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
            ignored += 1
            continue
          rel = os.path.splitext(os.path.relpath(path, item))[0]
          found.append((path, rel.replace(os.sep, '_')))
    else:
      found.append((item, os.path.splitext(os.path.basename(item))[0] or 'image'))
  return found, ignored


def _unique(name: str, taken: set) -> str:
  candidate, k = name, 2
  while candidate in taken:
    candidate, k = f'{name}-{k}', k + 1
  taken.add(candidate)
  return candidate


def _points(x: np.ndarray) -> list:
  return [[round(float(v), 3) for v in row] for row in np.asarray(x).reshape(-1, 2)]


def print_progress(stream: Optional[TextIO] = None, every: Optional[int] = None) -> ProgressFn:
  """Progress printer for `align_paths`: '[i/n] path: message (ETA)'.

  Prints every file when there are at most 100, else every `every` (default n / 100).
  """
  start = time.time()

  def progress(i: int, n: int, path: str, message: str) -> None:
    step = every or max(1, n // 100)
    if n > 100 and i % step and i != n:
      return
    elapsed = time.time() - start
    eta = elapsed / i * (n - i) if i else 0.0
    print(f'[{i}/{n}] {path}: {message}  ({elapsed:.0f}s, eta {eta:.0f}s)',
          file=stream or sys.stdout, flush=True)

  return progress


def align_paths(inputs: Sequence[str], output_dir: str, mode: str = 'ffhq', size: int = 256,
                all_faces: bool = False, detector: Optional[detect_lib.FaceDetector] = None,
                *, border: Optional[str] = None, max_pixels: Optional[int] = None,
                overwrite: bool = False, progress: Optional[ProgressFn] = None) -> AlignReport:
  """Detects and aligns faces in photos and folders of photos.

  Args:
    inputs: image files and/or folders (searched recursively for image extensions).
    output_dir: receives the PNG crops and landmarks.json (written atomically; must not
      overlap the inputs).
    mode: 'ffhq', 'arcface' or 'ghost224' (see fsjax.faces.align).
    size: crop side S in pixels.
    all_faces: align every face found, not only the largest.
    detector: a FaceDetector (default: a new DlibDetector).
    border: crop border fill (None = the mode's default, see fsjax.faces.align).
    max_pixels: refuse larger images (see fsjax.data.image_io.load_rgb).
    overwrite: replace an existing output_dir that is an earlier align output.
    progress: called as progress(i, n, path, message) after each file.

  Returns:
    An AlignReport (its exit_code is 0 when a face was aligned, else 2).

  Raises:
    ValueError: unknown mode, size < MIN_SIZE.
    paths.OutputError: output_dir overlaps an input, is a file, exists without overwrite or
      is not an earlier align output (nothing is read or written then).
  """
  if mode not in align_lib.ALIGN_MODES:
    raise ValueError(f'unknown mode {mode!r}; known: {align_lib.ALIGN_MODES}')
  if size < MIN_SIZE:
    raise ValueError(f'size must be at least {MIN_SIZE}, got {size}')
  output_dir = paths.check_output_dir(output_dir, inputs, marker=LANDMARKS_FILE,
                                      kind='align output', overwrite=overwrite)
  with paths.atomic_dir(output_dir) as tmp:
    report = _align_into(tmp, inputs, mode, size, all_faces, detector, border, max_pixels,
                         progress)
  report.output_dir = output_dir
  return report


def _align_into(output_dir: str, inputs: Sequence[str], mode: str, size: int, all_faces: bool,
                detector: Optional[detect_lib.FaceDetector], border: Optional[str],
                max_pixels: Optional[int], progress: Optional[ProgressFn]) -> AlignReport:
  """align_paths writing into the (temporary) folder output_dir."""
  start = time.time()
  detector = detector if detector is not None else detect_lib.DlibDetector()
  border = border or align_lib.DEFAULT_BORDER[mode]
  items, ignored = collect_inputs(inputs)
  report = AlignReport(output_dir=output_dir, images=len(items), ignored=ignored)
  taken = {os.path.splitext(LANDMARKS_FILE)[0]}
  for i, (path, stem) in enumerate(items, 1):
    source = os.path.abspath(path)
    try:
      image = image_io.load_rgb(path, max_pixels=max_pixels)
    except (OSError, ValueError) as e:
      reason = image_io.error_reason(e)
      message = str(e)
      detail = message[message.find('(') + 1:message.rfind(')')] if message.endswith(')') else ''
      report.failures.append((source, reason, detail))
      if progress:
        progress(i, len(items), path, reason)
      continue
    faces = detector.detect(image)
    if not faces:
      report.failures.append((source, NO_FACE, f'{image.shape[1]}x{image.shape[0]}'))
      if progress:
        progress(i, len(items), path, NO_FACE)
      continue
    chosen = faces if all_faces else faces[:1]
    for k, face in enumerate(chosen):
      crop, m = align_lib.align_face(image, face, mode, size, border)
      name = _unique(f'{stem}_{k}' if all_faces else stem, taken) + '.png'
      image_io.save_png(os.path.join(output_dir, name), crop)
      report.files[name] = {
          'source': source,
          'face_index': k,
          'faces_in_image': len(faces),
          'box': [round(float(v), 3) for v in face.box],
          'score': round(float(face.score), 4),
          'detector': getattr(face, 'detector', ''),
          'landmarks5': _points(face.landmarks5),
          'landmarks68': _points(face.landmarks68),
          'affine': [[round(float(v), 6) for v in row] for row in np.asarray(m)],
          'landmarks5_crop': _points(align_lib.transform_points(m, face.landmarks5)),
      }
      report.faces_aligned += 1
    if progress:
      progress(i, len(items), path, f'{len(faces)} face(s), aligned {len(chosen)}')
  report.seconds = time.time() - start
  _write_landmarks(os.path.join(output_dir, LANDMARKS_FILE), mode, size, border, report)
  return report


def _write_landmarks(path: str, mode: str, size: int, border: str, report: AlignReport):
  """landmarks.json with one line per output file (readable and diffable)."""
  files = [f'  {json.dumps(name)}: {json.dumps(record)}' for name, record in report.files.items()]
  failures = [f'  {json.dumps({"source": s, "reason": r, "detail": d})}'
              for s, r, d in report.failures]
  with open(path, 'w') as f:
    f.write(f'{{"mode": {json.dumps(mode)}, "size": {size}, "border": {json.dumps(border)},\n')
    f.write(' "files": {\n' + ',\n'.join(files) + '\n },\n')
    f.write(' "failures": [\n' + ',\n'.join(failures) + '\n ]}\n')
