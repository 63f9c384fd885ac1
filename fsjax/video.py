"""Face swapping in videos: batched decoding, face tracking with landmark smoothing, muxing.

- `read_video_info` / `iter_frames`: decode with imageio-ffmpeg (the ffmpeg binary ships in its
  wheel) in batches of uint8 [B, H, W, 3] frames, keeping the frame rate;
- `OneEuroFilter` and `FaceTracker`: detections are associated to tracks by box IoU and their
  landmarks smoothed over time (One-Euro filter, in units of the face size) so the pasted face
  does not jitter;
- `VideoWriter`: H.264 MP4 written to a temporary file, the source's audio copied in, the
  synthetic-media tag added (fsjax.provenance), and the file moved into place only when complete;
- `swap_video`: the loop, with a progress bar (frames/s and ETA); frames without a face pass
  through unchanged and are counted.
"""

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Any, Iterator, Optional, Sequence

import imageio_ffmpeg
import numpy as np

from fsjax import provenance
from fsjax.faces.detect import box_iou

VIDEO_EXTENSIONS = ('.mp4', '.mov', '.m4v', '.mkv', '.avi', '.webm', '.mpg', '.mpeg', '.wmv',
                    '.flv', '.3gp', '.ts')
OUTPUT_VIDEO_EXTENSIONS = ('.mp4',)


class VideoError(ValueError):
  """A video that cannot be decoded or written."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What the swap needs to know about an input video."""
  path: str
  width: int
  height: int
  fps: float
  duration: float  # seconds, as reported by the container (0 when unknown)
  codec: str

  @property
  def estimated_frames(self) -> int:
    return int(round(self.duration * self.fps)) if self.duration > 0 else 0


@contextlib.contextmanager
def _spawning_ffmpeg():
  """Silences JAX's os.fork() warning while ffmpeg is started (fork + exec is safe)."""
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message=r'os\.fork\(\) was called', category=RuntimeWarning)
    yield


def is_video_path(path: str) -> bool:
  """Whether the extension names a video container fsjax reads."""
  return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def read_video_info(path: str) -> VideoInfo:
  """Probes a video (size, fps, duration); raises VideoError when ffmpeg cannot decode it."""
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  try:
    with _spawning_ffmpeg():
      reader = imageio_ffmpeg.read_frames(path, pix_fmt='rgb24')
      meta = next(reader)
    reader.close()
  except (OSError, RuntimeError, StopIteration, ValueError) as e:
    raise VideoError(f'unsupported video: {path} ({str(e).splitlines()[0] if str(e) else e!r})'
                     ) from e
  size = meta.get('size')
  fps = meta.get('fps') or 0.0
  if not size or not fps or fps <= 0:
    raise VideoError(f'unsupported video: {path} (no video stream with a frame rate)')
  return VideoInfo(path=path, width=int(size[0]), height=int(size[1]), fps=float(fps),
                   duration=float(meta.get('duration') or 0.0), codec=str(meta.get('codec')))


def iter_frames(info: VideoInfo, batch_size: int) -> Iterator[np.ndarray]:
  """Decodes the video in batches: yields uint8 [B, H, W, 3] (the last batch may be shorter)."""
  with _spawning_ffmpeg():
    reader = imageio_ffmpeg.read_frames(info.path, pix_fmt='rgb24')
    next(reader)
  batch = []
  try:
    for raw in reader:
      batch.append(np.frombuffer(raw, np.uint8).reshape(info.height, info.width, 3))
      if len(batch) == batch_size:
        yield np.stack(batch)
        batch = []
    if batch:
      yield np.stack(batch)
  finally:
    reader.close()


class OneEuroFilter:
  """One-Euro low-pass filter (Casiez et al. 2012) over arrays of any fixed shape.

  The cutoff frequency rises with the speed of the signal: strong smoothing when a face is
  still (no jitter), little lag when it moves.
  """

  def __init__(self, min_cutoff: float = 1.0, beta: float = 4.0, d_cutoff: float = 1.0):
    self.min_cutoff = min_cutoff
    self.beta = beta
    self.d_cutoff = d_cutoff
    self._x = None
    self._dx = None

  @staticmethod
  def _alpha(cutoff, dt):
    tau = 1.0 / (2.0 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)

  def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
    """Filters sample x taken dt seconds after the previous one; returns the smoothed value."""
    x = np.asarray(x, np.float64)
    if self._x is None:
      self._x, self._dx = x, np.zeros_like(x)
      return x
    dx = (x - self._x) / dt
    a_d = self._alpha(self.d_cutoff, dt)
    self._dx = self._dx + a_d * (dx - self._dx)
    cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
    a = self._alpha(cutoff, dt)
    self._x = self._x + a * (x - self._x)
    return self._x


@dataclasses.dataclass
class _Track:
  box: tuple
  scale: float
  last_frame: int
  filter: OneEuroFilter


class FaceTracker:
  """Associates detections over frames (greedy box IoU) and smooths their landmarks.

  Landmarks are filtered in units of the face size fixed when the track starts, so the filter
  constants do not depend on the resolution. A track not matched for `max_missing` frames ends.
  """

  def __init__(self, fps: float, *, iou_threshold: float = 0.3, max_missing: int = 5,
               min_cutoff: float = 1.0, beta: float = 4.0):
    self.fps = float(fps)
    self.iou_threshold = iou_threshold
    self.max_missing = max_missing
    self.min_cutoff = min_cutoff
    self.beta = beta
    self._tracks: list[_Track] = []
    self._frame = -1

  def update(self, faces: Sequence[Any]) -> list[Any]:
    """Takes the detections of the next frame; returns them (same order) with smoothed landmarks.

    Args:
      faces: objects with `box` (x0, y0, x1, y1), `landmarks68` [68, 2] and `landmarks5` [5, 2]
        (fsjax.faces.detect.Face); dataclasses, copied with the smoothed landmarks.
    """
    self._frame += 1
    self._tracks = [t for t in self._tracks if self._frame - t.last_frame <= self.max_missing]
    pairs = sorted(((box_iou(f.box, t.box), i, j) for i, f in enumerate(faces)
                    for j, t in enumerate(self._tracks)), reverse=True)
    assigned, used = {}, set()
    for iou, i, j in pairs:
      if iou < self.iou_threshold:
        break
      if i not in assigned and j not in used:
        assigned[i] = j
        used.add(j)
    out = []
    for i, face in enumerate(faces):
      points = np.concatenate([np.asarray(face.landmarks68, np.float64),
                               np.asarray(face.landmarks5, np.float64)], axis=0)
      if i in assigned:
        track = self._tracks[assigned[i]]
        dt = (self._frame - track.last_frame) / self.fps
      else:
        x0, y0, x1, y1 = face.box
        track = _Track(box=tuple(face.box), scale=max(float(np.hypot(x1 - x0, y1 - y0)), 1.0),
                       last_frame=self._frame,
                       filter=OneEuroFilter(self.min_cutoff, self.beta))
        self._tracks.append(track)
        dt = 1.0 / self.fps
      smooth = track.filter(points / track.scale, dt) * track.scale
      track.box = tuple(face.box)
      track.last_frame = self._frame
      out.append(dataclasses.replace(face, landmarks68=smooth[:68].astype(np.float32),
                                     landmarks5=smooth[68:].astype(np.float32)))
    return out


class VideoWriter:
  """Writes an MP4 (H.264) atomically, with the source's audio and the synthetic-media tag.

  Use as a context manager; frames go to a temporary file next to the output, and only a
  complete run is muxed and renamed to `path`. On error the temporary files are removed.
  """

  def __init__(self, path: str, width: int, height: int, fps: float, *,
               audio_from: Optional[str] = None, crf: int = 18, preset: str = 'veryfast'):
    if os.path.splitext(path)[1].lower() not in OUTPUT_VIDEO_EXTENSIONS:
      raise VideoError(f'unsupported output video format: {path} (use .mp4)')
    self.path = path
    self.width, self.height, self.fps = width, height, fps
    self.audio_from = audio_from
    self.frames = 0
    folder = os.path.dirname(os.path.abspath(path))
    fd, self._video_tmp = tempfile.mkstemp(prefix='.fsjax-', suffix='.video.mp4', dir=folder)
    os.close(fd)
    fd, self._out_tmp = tempfile.mkstemp(prefix='.fsjax-', suffix='.mp4', dir=folder)
    os.close(fd)
    # Odd sizes cannot be 4:2:0 subsampled; keep the exact size with 4:4:4 then.
    pix_fmt = 'yuv420p' if width % 2 == 0 and height % 2 == 0 else 'yuv444p'
    self._writer = imageio_ffmpeg.write_frames(
        self._video_tmp, (width, height), fps=fps, codec='libx264', quality=None,
        pix_fmt_out=pix_fmt, macro_block_size=1, ffmpeg_log_level='error',
        output_params=['-crf', str(crf), '-preset', preset])
    with _spawning_ffmpeg():
      self._writer.send(None)

  def write(self, frames: np.ndarray) -> None:
    """Appends uint8 [B, H, W, 3] (or one [H, W, 3]) frames."""
    frames = np.asarray(frames, np.uint8)
    if frames.ndim == 3:
      frames = frames[None]
    if frames.shape[1:] != (self.height, self.width, 3):
      raise VideoError(f'frame shape {frames.shape[1:]} != {(self.height, self.width, 3)}')
    for frame in frames:
      self._writer.send(np.ascontiguousarray(frame).tobytes())
      self.frames += 1

  def _mux(self) -> None:
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    base = [ffmpeg, '-y', '-v', 'error', '-i', self._video_tmp]
    maps = ['-map', '0:v:0']
    if self.audio_from:
      base += ['-i', self.audio_from]
      maps += ['-map', '1:a?']
    tail = provenance.video_metadata_args() + ['-movflags', '+faststart', '-f', 'mp4',
                                               self._out_tmp]
    result = None
    for audio in (['-c:a', 'copy'], ['-c:a', 'aac', '-b:a', '192k']):
      with _spawning_ffmpeg():
        result = subprocess.run(base + maps + ['-c:v', 'copy'] + audio + tail,
                                capture_output=True, text=True, check=False)
      if result.returncode == 0:
        return
    raise VideoError(f'ffmpeg could not write {self.path}: {result.stderr.strip()[-500:]}')

  def _cleanup(self) -> None:
    for tmp in (self._video_tmp, self._out_tmp):
      if os.path.exists(tmp):
        os.remove(tmp)

  def close(self) -> None:
    """Finishes encoding, muxes audio and metadata, and moves the file into place."""
    try:
      self._writer.close()
      self._mux()
      os.replace(self._out_tmp, self.path)
    finally:
      self._cleanup()

  def abort(self) -> None:
    """Stops encoding and removes the temporary files; `path` is not touched."""
    try:
      self._writer.close()
    except Exception:  # pylint: disable=broad-except
      pass
    self._cleanup()

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False


class Progress:
  """Console progress line on stderr: frames done / total, frames/s and ETA."""

  def __init__(self, total: int, enabled: bool = True, stream=None, every_s: float = 1.0):
    self.total = total
    self.enabled = enabled
    self.stream = stream or sys.stderr
    self.every_s = every_s
    self.done = 0
    self._start = time.perf_counter()
    self._last = 0.0

  def update(self, n: int) -> None:
    self.done += n
    now = time.perf_counter()
    if self.enabled and (now - self._last >= self.every_s or self.done >= self.total):
      self._last = now
      self.stream.write('\r' + self.line() + ' ' * 4)
      self.stream.flush()

  def line(self) -> str:
    elapsed = time.perf_counter() - self._start
    rate = self.done / elapsed if elapsed > 0 else 0.0
    total = max(self.total, self.done)
    eta = (total - self.done) / rate if rate > 0 else float('nan')
    eta_text = (f'{int(eta // 60):d}:{int(eta % 60):02d}' if np.isfinite(eta) else '?')
    return f'{self.done}/{total} frames  {rate:.2f} frames/s  ETA {eta_text}'

  def finish(self) -> None:
    if self.enabled:
      self.stream.write('\r' + self.line() + '\n')
      self.stream.flush()


def swap_video(swapper, source: Any, target_path: str, output_path: str, *,
               faces: Any = 'largest', mask_blur: Optional[float] = None,
               mask_erosion: Optional[float] = None, batch_size: int = 8,
               progress: bool = True) -> dict:
  """Swaps the source identity onto the faces of every frame of a video.

  Args:
    swapper: a fsjax.swapper.Swapper.
    source: what Swapper.identity accepts (image(s) of the source person, or an embedding).
    target_path: input video; its frame rate and audio are kept.
    output_path: output .mp4, written atomically and tagged as synthetic media.
    faces: 'largest', 'all' or a face index (largest first) per frame.
    mask_blur, mask_erosion: see Swapper.swap (None = the swapper's defaults).
    batch_size: frames decoded and swapped per step.
    progress: print frames/s and ETA to stderr.

  Returns:
    dict with frames, frames_without_face, faces_swapped, fps, width, height, seconds.
  """
  info = read_video_info(target_path)
  identity = swapper.identity(source)
  tracker = FaceTracker(info.fps)
  bar = Progress(info.estimated_frames, enabled=progress)
  stats = {'frames': 0, 'frames_without_face': 0, 'faces_swapped': 0}
  start = time.perf_counter()
  with VideoWriter(output_path, info.width, info.height, info.fps,
                   audio_from=target_path) as writer:
    for batch in iter_frames(info, batch_size):
      out, counts = swapper.swap_frames(identity, batch, faces=faces, mask_blur=mask_blur,
                                        mask_erosion=mask_erosion, tracker=tracker)
      writer.write(out)
      stats['frames'] += len(batch)
      stats['frames_without_face'] += int(sum(c == 0 for c in counts))
      stats['faces_swapped'] += int(sum(counts))
      bar.update(len(batch))
  bar.finish()
  stats.update(fps=info.fps, width=info.width, height=info.height,
               seconds=time.perf_counter() - start)
  return stats
