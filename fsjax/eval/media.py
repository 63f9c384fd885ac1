"""Frames for evaluation: probe an image or video, pick frames evenly, decode only those.

A video of N frames sampled at k frames gives the indices floor((i + 1/2) N / k),
i = 0..k-1: the centres of k equal spans (all frames when N <= k), so the first and last
frames (fades, titles) are not favoured. A target and its precomputed swap are read at the
same indices, spread over the shorter of the two (`sample_indices(min(N_t, N_swap), k)`).
Frame counts are exact (ffmpeg decodes the whole stream once, imageio-ffmpeg's
count_frames_and_secs), not estimated from the container's duration.
"""

import contextlib
import dataclasses
import os
import warnings
from typing import Iterator, Sequence

import imageio_ffmpeg
import numpy as np

from fsjax.data import image_io

VIDEO_EXTENSIONS = ('.mp4', '.mov', '.m4v', '.mkv', '.avi', '.webm', '.mpg', '.mpeg', '.wmv',
                    '.flv', '.3gp', '.ts')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')
MISSING = 'missing_video'  # skip reasons, as eval.json counts them
UNREADABLE = 'unreadable'


class MediaError(Exception):
  """A file that cannot be evaluated; `reason` is MISSING or UNREADABLE."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class Media:
  """A probed image or video: kind 'image' | 'video', num_frames (1 for an image)."""
  path: str
  kind: str
  num_frames: int


@contextlib.contextmanager
def _quiet_fork():
  """JAX warns on os.fork(); starting ffmpeg (fork + exec) is safe."""
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message=r'os\.fork\(\) was called', category=RuntimeWarning)
    yield


def is_video(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def probe(path: str) -> Media:
  """Checks that `path` exists and decodes; counts a video's frames.

  Raises:
    MediaError: MISSING (no such file) or UNREADABLE (ffmpeg / the image decoder fails, or
      the video has no frame).
  """
  if not os.path.isfile(path):
    raise MediaError(MISSING, f'missing: {path}')
  if not is_video(path):
    try:
      image_io.load_rgb(path)
    except (ValueError, OSError) as e:
      raise MediaError(UNREADABLE, f'unreadable image {path}: {e}') from e
    return Media(path, 'image', 1)
  try:
    with _quiet_fork():
      count, _ = imageio_ffmpeg.count_frames_and_secs(path)
  except (OSError, RuntimeError, ValueError) as e:
    raise MediaError(UNREADABLE, f'unreadable video {path}: {str(e).splitlines()[0]}') from e
  if count <= 0:
    raise MediaError(UNREADABLE, f'unreadable video {path}: no frames')
  return Media(path, 'video', int(count))


def sample_indices(num_frames: int, k: int) -> list[int]:
  """k frame indices spread evenly over num_frames (module doc); all when num_frames <= k."""
  if num_frames <= 0 or k <= 0:
    return []
  if num_frames <= k:
    return list(range(num_frames))
  return [int((i + 0.5) * num_frames / k) for i in range(k)]


def _iter_video(path: str) -> Iterator[np.ndarray]:
  with _quiet_fork():
    reader = imageio_ffmpeg.read_frames(path, pix_fmt='rgb24')
    meta = next(reader)
  width, height = meta['size']
  try:
    for raw in reader:
      yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
  finally:
    reader.close()


def read_frames(media: Media, indices: Sequence[int]) -> np.ndarray:
  """uint8 [K, H, W, 3]: the frames at `indices` (sorted, unique; decoding stops after the
  last one). An image gives itself for index 0.

  Raises:
    MediaError: UNREADABLE when decoding fails or ends before an index.
  """
  wanted = sorted(set(int(i) for i in indices))
  if not wanted:
    return np.zeros((0, 0, 0, 3), np.uint8)
  if media.kind == 'image':
    if wanted != [0]:
      raise ValueError(f'an image has only frame 0, asked for {wanted}')
    return image_io.load_rgb(media.path)[None]
  found = []
  try:
    for index, frame in enumerate(_iter_video(media.path)):
      if index == wanted[len(found)]:
        found.append(frame.copy())
        if len(found) == len(wanted):
          break
  except (OSError, RuntimeError, ValueError, StopIteration) as e:
    raise MediaError(UNREADABLE, f'unreadable video {media.path}: {e}') from e
  if len(found) < len(wanted):
    raise MediaError(UNREADABLE, f'unreadable video {media.path}: decoding stopped before '
                     f'frame {wanted[len(found)]}')
  return np.stack(found)
