"""Face swapping in videos: a pipelined decode -> faces -> model -> paste -> encode, and muxing.

- `read_video_info` / `FrameReader` / `iter_frames`: decode with the ffmpeg of imageio-ffmpeg
  (the binary ships in its wheel), keeping the frame rate; `FrameReader` also tells a video
  that stops decoding part-way (`announced_frames`: the count an MP4/MOV declares);
- faces are found on keyframes and followed in between (fsjax.faces.track.VideoFaceTracker),
  persons keep their numbers across frames, and their landmarks are smoothed over time;
- `VideoWriter`: H.264 MP4 written to a temporary file, the source's audio copied in, the
  synthetic-media tag added (fsjax.swap.provenance), and the file moved into place only when
  complete (also on SIGTERM or Ctrl-C: the temporary files are removed, the output untouched);
- `swap_video`: decoding, face work, model batches, paste-back and encoding run in threads
  joined by bounded queues (frames stay in order, memory stays bounded), so the slowest stage
  sets the pace; progress shows frames/s and the ETA; frames without a face pass through.
"""

import collections
import contextlib
import dataclasses
import os
import queue
import re
import resource
import signal
import struct
import subprocess
import tempfile
import threading
import time
import warnings
from typing import Any, Iterator, Optional

import imageio_ffmpeg
import numpy as np

from fsjax.faces import track as track_lib
from fsjax.swap import provenance
from fsjax.swap import swapper as swapper_lib
from fsjax.train import metric_logging

# The per-frame association + smoothing of earlier versions, kept under their old names.
FaceTracker = track_lib.FaceTracker
OneEuroFilter = track_lib.OneEuroFilter

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
  batch = []
  for frame in FrameReader(info):
    batch.append(frame)
    if len(batch) == batch_size:
      yield np.stack(batch)
      batch = []
  if batch:
    yield np.stack(batch)


def _boxes(data: bytes, start: int = 0, end: Optional[int] = None) -> Iterator[tuple]:
  """(type, payload start, payload end) of the ISO BMFF boxes in data[start:end]."""
  end = len(data) if end is None else end
  while start + 8 <= end:
    size, kind = struct.unpack('>I4s', data[start:start + 8])
    header = 8
    if size == 1 and start + 16 <= end:
      size, header = struct.unpack('>Q', data[start + 8:start + 16])[0], 16
    elif size == 0:
      size = end - start
    if size < header or start + size > end:
      return
    yield kind, start + header, start + size
    start += size


def announced_frames(path: str) -> Optional[int]:
  """Frames the first video track of an MP4/MOV/M4V/3GP declares (its sample table), or None.

  None for other containers, fragmented MP4 and files whose `moov` cannot be read. The count
  is the container's own, so a truncated file still announces all its frames.
  """
  try:
    with open(path, 'rb') as f:
      moov, offset = None, 0
      while moov is None:
        f.seek(offset)
        header = f.read(16)
        if len(header) < 8:
          return None
        size, kind = struct.unpack('>I4s', header[:8])
        if size == 1 and len(header) == 16:
          size = struct.unpack('>Q', header[8:16])[0]
        elif size == 0:
          size = os.fstat(f.fileno()).st_size - offset
        if size < 8:
          return None
        if kind == b'moov':
          if size > 1 << 28:
            return None
          f.seek(offset)
          moov = f.read(size)
        offset += size
  except OSError:
    return None
  def child(start, end, kind):
    return next(((a, b) for k, a, b in _boxes(moov, start, end) if k == kind), None)

  for kind, start, end in _boxes(moov, 8, len(moov)):
    if kind != b'trak':
      continue
    mdia = child(start, end, b'mdia')
    hdlr = mdia and child(*mdia, b'hdlr')
    if not hdlr or moov[hdlr[0] + 8:hdlr[0] + 12] != b'vide':
      continue
    minf = child(*mdia, b'minf')
    stbl = minf and child(*minf, b'stbl')
    sizes = stbl and (child(*stbl, b'stsz') or child(*stbl, b'stz2'))
    if not sizes or sizes[1] - sizes[0] < 12:
      return None
    count = struct.unpack('>I', moov[sizes[0] + 8:sizes[0] + 12])[0]
    return count or None  # 0: fragmented (the samples live in moof boxes)
  return None


class FrameReader:
  """Decodes a video into uint8 [H, W, 3] frames, in order, and notes how decoding ended.

  After iterating: `frames` (decoded), `announced` (`announced_frames`, or an estimate from
  the duration when the container declares none), `errors` (ffmpeg's error lines) and
  `partial` (decoding stopped with errors before the announced count). `kill()` stops
  ffmpeg from another thread.
  """

  def __init__(self, info: 'VideoInfo'):
    self.info = info
    self.frames = 0
    self.errors: list[str] = []
    self.announced = announced_frames(info.path)
    self.exact = self.announced is not None
    if self.announced is None:
      self.announced = info.estimated_frames or None
    self._process = None

  @property
  def partial(self) -> bool:
    return bool(self.errors) and self.announced is not None and self.frames < self.announced

  def describe(self) -> str:
    """'decoding stopped after N of M frames ...' for a partial video."""
    about = '' if self.exact else 'about '
    lines = [re.sub(r'^(\[[^\]]*\]\s*)+', '', line) for line in self.errors]
    last = next((line for line in lines if 'partial file' in line), lines[0] if lines else '')
    return (f'decoding {self.info.path} stopped after {self.frames} of the {about}'
            f'{self.announced} frames the container announces (a truncated or damaged file?'
            f'{" ffmpeg: " + last if last else ""})')

  def kill(self) -> None:
    process = self._process
    if process is not None and process.poll() is None:
      process.kill()

  def __iter__(self) -> Iterator[np.ndarray]:
    width, height = self.info.width, self.info.height
    size = width * height * 3
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), '-nostdin', '-v', 'error', '-i', self.info.path,
           '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-']
    with _spawning_ffmpeg():
      process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, bufsize=0)
    self._process = process

    def drain():  # ffmpeg blocks when nobody reads its stderr
      for line in process.stderr:
        text = line.decode('utf-8', 'replace').strip()
        if text and len(self.errors) < 100:
          self.errors.append(text)

    log = threading.Thread(target=drain, name='fsjax-ffmpeg-log', daemon=True)
    log.start()
    try:
      while True:
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
          n = process.stdout.readinto(view[got:])
          if not n:
            break
          got += n
        if got < size:
          if got:
            self.errors.append(f'incomplete last frame ({got} of {size} bytes)')
          break
        self.frames += 1
        yield np.frombuffer(buffer, np.uint8).reshape(height, width, 3)
    finally:
      if process.poll() is None:
        process.kill()
      process.wait()
      log.join(timeout=5)
      process.stdout.close()
      process.stderr.close()
      self._process = None
      if process.returncode not in (0, None, -signal.SIGKILL) and not self.errors:
        self.errors.append(f'ffmpeg exited with status {process.returncode}')


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
    self._video_tmp = self._out_tmp = self._writer = None
    try:
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
    except BaseException:  # a signal or a failed start: no temporary file stays behind
      self.abort()
      raise

  def write(self, frames: np.ndarray) -> None:
    """Appends uint8 [B, H, W, 3] (or one [H, W, 3]) frames."""
    frames = np.asarray(frames, np.uint8)
    if frames.ndim == 3:
      frames = frames[None]
    if frames.shape[1:] != (self.height, self.width, 3):
      raise VideoError(f'frame shape {frames.shape[1:]} != {(self.height, self.width, 3)}')
    for frame in frames:
      self._writer.send(np.ascontiguousarray(frame))  # any buffer; no bytes copy
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
      if tmp and os.path.exists(tmp):
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
      if self._writer is not None:
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


class Termination:
  """SIGTERM as a request: `check()` raises SystemExit(143) once the signal has come.

  The swap checks between frames, so the exception unwinds like Ctrl-C's KeyboardInterrupt:
  `VideoWriter` removes its temporary files and the output is not touched. (A handler that
  raised at once could land where Python ignores exceptions, e.g. in an at-fork hook while
  ffmpeg starts.)
  """

  def __init__(self):
    self.signum = None

  def check(self) -> None:
    if self.signum is not None:
      raise SystemExit(128 + self.signum)


@contextlib.contextmanager
def sigterm_requests():
  """Yields a Termination that SIGTERM sets while the block runs (main thread only).

  A SIGTERM that came too late to be checked (the output already complete) still ends the
  process when the block exits.
  """
  termination = Termination()
  if threading.current_thread() is not threading.main_thread():
    yield termination
    return

  def handler(signum, unused_frame):
    termination.signum = signum

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield termination
  finally:
    signal.signal(signal.SIGTERM, previous)
  termination.check()


class _Stopped(Exception):
  """Raised in a pipeline thread when another stage failed or the run was interrupted."""


_END = object()


class _Pipeline:
  """Stages in threads joined by bounded queues; items keep their order; the first error stops all.

  A stage is a function from an iterator of input items to an iterator of output items, so a
  stage may batch (take several items before giving any).
  """

  def __init__(self, check=None):
    """check: called while the main thread waits (it may raise, e.g. Termination.check)."""
    self._stop = threading.Event()
    self._errors: list[BaseException] = []
    self._threads: list[threading.Thread] = []
    self._check = check
    self.cpu_seconds: dict[str, float] = {}  # CPU time of each stage's thread

  def _wait(self):
    if self._errors:
      raise self._errors[0]
    if self._stop.is_set():
      raise _Stopped()
    if self._check is not None and threading.current_thread() is threading.main_thread():
      self._check()

  def items(self, source: queue.Queue) -> Iterator[Any]:
    """The items of a queue until its end; raises a stage's error when one failed."""
    while True:
      self._wait()
      try:
        item = source.get(timeout=0.05)
      except queue.Empty:
        continue
      if item is _END:
        return
      yield item

  def _put(self, target: queue.Queue, item: Any) -> None:
    while True:
      self._wait()
      try:
        target.put(item, timeout=0.05)
        return
      except queue.Full:
        continue

  def stage(self, name: str, fn, source: Optional[queue.Queue], depth: int) -> queue.Queue:
    """Runs fn(items of source) in a thread; returns the queue (of `depth` items) it fills."""
    target = queue.Queue(maxsize=depth)

    def run():
      try:
        for item in fn(self.items(source) if source is not None else None):
          self._put(target, item)
        self._put(target, _END)
      except _Stopped:
        pass
      except BaseException as e:  # pylint: disable=broad-except
        self._errors.append(e)
        self._stop.set()
      finally:
        self.cpu_seconds[name] = time.thread_time()

    thread = threading.Thread(target=run, name=f'fsjax-video-{name}', daemon=True)
    thread.start()
    self._threads.append(thread)
    return target

  def close(self, timeout: float = 10.0) -> None:
    self._stop.set()
    for thread in self._threads:
      thread.join(timeout)


@dataclasses.dataclass
class _Frame:
  index: int
  image: np.ndarray  # uint8 [H, W, 3]; the swapped frame after the paste stage
  faces: list  # the selected TrackedFaces
  found: int  # faces the tracker saw in the frame (selected or not)
  crops: Optional[np.ndarray] = None  # uint8 [F, S, S, 3]
  matrices: Optional[np.ndarray] = None  # [F, 2, 3]
  swapped: Optional[np.ndarray] = None  # float32 [F, S, S, 3]
  prepared: Optional[tuple] = None  # VideoFaceTracker.prepare's result


class _Selection:
  """Which tracked faces of a frame to swap: 'all', person N, or the largest (with hysteresis).

  'largest' stays on the same track while its face is at least `keep` times the largest one
  (two faces of about the same size would otherwise swap turns from frame to frame).
  """

  def __init__(self, which: Any, keep: float = 0.7):
    self.which = which
    self.keep = keep
    self._track = None

  def __call__(self, faces: list) -> list:
    if self.which == 'all':
      return list(faces)
    if isinstance(self.which, int):
      return [f for f in faces if f.person == self.which]
    if not faces:
      self._track = None
      return []
    current = next((f for f in faces if f.track == self._track), None)
    if current is not None and current.area >= self.keep * faces[0].area:
      return [current]
    self._track = faces[0].track
    return [faces[0]]


def swap_video(swapper, source: Any, target_path: str, output_path: str, *,
               faces: Any = 'largest', mask_blur: Optional[float] = None,
               mask_erosion: Optional[float] = None, batch_size: int = 8,
               progress: bool = True, allow_partial: bool = False, detect_every: int = 10,
               detect_max_side: int = 640, tracker_options: Optional[dict] = None) -> dict:
  """Swaps the source identity onto the faces of every frame of a video.

  Args:
    swapper: a fsjax.swap.swapper.Swapper (or PassThroughSwapper).
    source: what Swapper.identity accepts (image(s) of the source person, or an embedding).
    target_path: input video; its frame rate and audio are kept.
    output_path: output .mp4, written atomically and tagged as synthetic media.
    faces: 'largest' (per frame, see `_Selection`), 'all', or a person number N: persons are
      numbered by first appearance, largest first (in the first frame with faces, the order
      of an image target), and person N is swapped in every frame that shows them.
    mask_blur, mask_erosion: see Swapper.swap (None = the swapper's defaults).
    batch_size: faces per model call.
    progress: print frames/s and ETA to stderr.
    allow_partial: write the frames of a video that stops decoding part-way (else VideoError).
    detect_every, detect_max_side: keyframe interval and detection size of the tracker
      (fsjax.faces.track.VideoFaceTracker; detect_every=1 detects on every frame).
    tracker_options: more VideoFaceTracker keyword arguments.

  Returns:
    dict with frames, frames_without_face (passed through), frames_with_face (the tracker saw
    a face), faces_swapped, persons, keyframes, fps, width, height, seconds, partial,
    frames_announced, stage_seconds {decode, detect, track, align, model, paste, encode}
    (time spent in each stage; the stages overlap, so their sum exceeds `seconds`),
    thread_cpu_seconds (CPU time of each pipeline thread: decode, detect = the keyframes'
    HOG pass, faces = the rest of detection + tracking + alignment, model, paste, encode)
    and cpu_seconds (the whole process and its ffmpeg children: less load-dependent).

  Raises:
    VideoError: undecodable input, or a partial one without allow_partial (nothing written).
    SwapInputError: a person number that never appears (nothing written).
  """
  faces = swapper_lib.parse_selection(faces)
  info = read_video_info(target_path)
  identity = swapper.identity(source)
  blur = swapper.mask_blur if mask_blur is None else float(mask_blur)
  erosion = swapper.mask_erosion if mask_erosion is None else float(mask_erosion)
  options = dict(detect_every=detect_every, detect_max_side=detect_max_side,
                 reidentify=isinstance(faces, int))
  options.update(tracker_options or {})
  tracker = track_lib.VideoFaceTracker(swapper.detector, info.fps, **options)
  select = _Selection(faces)
  reader = FrameReader(info)
  seconds = collections.defaultdict(float)
  stats = collections.Counter()
  # Queued frames take at most ~32 MiB per queue (plus a model batch in flight).
  depth = int(np.clip((32 << 20) // max(1, info.width * info.height * 3), 2, 8))
  batch_size = max(1, int(batch_size))

  def decode(_):
    clock = time.perf_counter()
    for index, image in enumerate(reader):
      now = time.perf_counter()
      seconds['decode'] += now - clock
      yield _Frame(index=index, image=image, faces=[], found=0)
      clock = time.perf_counter()

  def prepare(frames):  # the keyframes' HOG pass, a few frames ahead of the tracker
    for frame in frames:
      frame.prepared = tracker.prepare(frame.image, frame.index)
      yield frame

  def find_faces(frames):
    for frame in frames:
      found = tracker(frame.image, frame.prepared)
      frame.prepared = None
      frame.faces, frame.found = select(found), len(found)
      if frame.faces:
        start = time.perf_counter()
        aligned = [swapper.align(frame.image, face) for face in frame.faces]
        frame.crops = np.stack([c for c, _ in aligned])
        frame.matrices = np.stack([m for _, m in aligned])
        seconds['align'] += time.perf_counter() - start
      yield frame

  def model(frames):
    pending = []

    def run():
      with_faces = [f for f in pending if f.faces]
      if with_faces:
        start = time.perf_counter()
        crops = np.concatenate([f.crops for f in with_faces])
        # Every call gets exactly `calls` crops (the last padded): one compiled shape.
        calls = min(batch_size, swapper.batch_size)
        padded = np.concatenate([crops, np.repeat(crops[-1:], -len(crops) % calls, axis=0)])
        out = np.concatenate([swapper.generate(padded[i:i + calls], identity)
                              for i in range(0, len(padded), calls)])
        seconds['model'] += time.perf_counter() - start
        offset = 0
        for frame in with_faces:
          frame.swapped = out[offset:offset + len(frame.faces)]
          offset += len(frame.faces)
      done = list(pending)
      pending.clear()
      return done

    for frame in frames:
      pending.append(frame)
      if sum(len(f.faces) for f in pending) >= batch_size or len(pending) >= batch_size:
        yield from run()
    yield from run()

  def paste(frames):
    for frame in frames:
      if frame.faces:
        start = time.perf_counter()
        image = frame.image
        for face, crop, out, matrix in zip(frame.faces, frame.crops, frame.swapped,
                                           frame.matrices):
          image = swapper.paste_face(image, face, crop, out, matrix, blur, erosion, out=image)
        frame.image = image
        frame.crops = frame.swapped = None
        seconds['paste'] += time.perf_counter() - start
      yield frame

  bar = metric_logging.CountProgress(info.estimated_frames, 'frames', enabled=progress)
  start = time.perf_counter()
  cpu_start = _process_cpu()
  pipeline = None
  try:
    with sigterm_requests() as termination, VideoWriter(
        output_path, info.width, info.height, info.fps, audio_from=target_path) as writer:
      pipeline = _Pipeline(check=termination.check)
      decoded = pipeline.stage('decode', decode, None, depth)
      prepared = pipeline.stage('detect', prepare, decoded, depth)
      with_faces = pipeline.stage('faces', find_faces, prepared, depth)
      swapped = pipeline.stage('model', model, with_faces, max(depth, batch_size))
      pasted = pipeline.stage('paste', paste, swapped, depth)
      main_cpu_start = time.thread_time()
      for frame in pipeline.items(pasted):
        clock = time.perf_counter()
        writer.write(frame.image)
        seconds['encode'] += time.perf_counter() - clock
        stats['frames'] += 1
        stats['frames_with_face'] += frame.found > 0
        stats['frames_without_face'] += not frame.faces
        stats['faces_swapped'] += len(frame.faces)
        bar.update(1)
      main_cpu = time.thread_time() - main_cpu_start
      termination.check()
      if reader.partial and not allow_partial:
        raise VideoError(reader.describe() + '; pass --allow_partial to write the '
                         f'{reader.frames} decoded frames')
      if not stats['frames']:
        raise VideoError(f'no frame could be decoded from {target_path}')
      if isinstance(faces, int) and faces >= len(tracker.persons):
        count = len(tracker.persons)
        raise swapper_lib.SwapInputError(
            f'face index {faces} out of range: the video shows {count} person(s) (indices '
            f'0..{count - 1}, numbered by first appearance, largest first)' if count else
            f'face index {faces} out of range: no face found in the video')
  finally:
    reader.kill()
    if pipeline is not None:
      pipeline.close()
  bar.finish()
  seconds['detect'] = tracker.seconds['detect'] + tracker.prepare_seconds
  seconds['track'] = tracker.seconds['track']
  result = {key: int(stats[key]) for key in ('frames', 'frames_with_face',
                                             'frames_without_face', 'faces_swapped')}
  result.update(
      persons=len(tracker.persons), keyframes=tracker.counts['keyframes'],
      tracker=dict(tracker.counts), fps=info.fps, width=info.width, height=info.height,
      seconds=time.perf_counter() - start, partial=reader.partial,
      frames_announced=reader.announced,
      stage_seconds={k: float(seconds[k]) for k in STAGES},
      thread_cpu_seconds=dict(pipeline.cpu_seconds, encode=main_cpu),
      cpu_seconds=_process_cpu() - cpu_start)
  if reader.partial:
    result['partial_message'] = reader.describe()
  return result


STAGES = ('decode', 'detect', 'track', 'align', 'model', 'paste', 'encode')


def _process_cpu() -> float:
  """CPU seconds of this process and its finished children (ffmpeg), user + system."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
