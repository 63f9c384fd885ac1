"""Benchmark of video swapping: frames/s end to end and ms/frame per stage on a real clip.

`bench_video(clip, checkpoint=EXPORT)` runs the `fsjax swap` video path (fsjax.swap.video
.swap_video: decode, detect, track, align, model, paste, encode in a pipeline) on the clip,
writing to a temporary file that is deleted afterwards; `null_model=True` replaces the
generator by a pass-through (fsjax.swap.swapper.PassThroughSwapper), timing the face
pipeline alone. The model is compiled for every batch shape before the clock starts.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Optional

import numpy as np

from fsjax.bench import machine
from fsjax.swap import swapper as swapper_lib
from fsjax.swap import video


def _warm_up(swapper: swapper_lib.Swapper, identity: np.ndarray, batch_size: int) -> None:
  """Compiles the generator for the one batch shape swap_video uses."""
  size, n = swapper.image_size, min(batch_size, swapper.batch_size)
  swapper.generate(np.zeros((n, size, size, 3), np.uint8), identity)


def bench_video(clip: str, *, checkpoint: Optional[str] = None, null_model: bool = False,
                source: Optional[str] = None, batch_size: int = 8, faces: Any = 'largest',
                detect_every: int = 10, detect_max_side: int = 640, null_size: int = 256,
                tracker_options: Optional[dict] = None) -> dict[str, Any]:
  """Times a video swap of `clip`.

  Args:
    clip: input video.
    checkpoint: export directory or training workdir (with null_model False).
    null_model: time the face pipeline alone (pass-through generator, `null_size` px crops).
    source: photo for the identity; default a fixed random unit vector (the speed does not
      depend on it).
    batch_size, faces, detect_every, detect_max_side, tracker_options: as in swap_video.
    null_size: crop size of the pass-through (256 = the paper model's).

  Returns:
    {'mode': 'video', 'fps': frames/s end to end, 'stages': {stage: ms per frame},
    'frames', 'frames_with_face', 'frames_with_face_fraction', 'keyframes', 'width',
    'height', 'image_size', 'null_model', 'seconds', 'setup_s', ...environment}.
  """
  if null_model == bool(checkpoint):
    raise ValueError('give a checkpoint or null_model=True (one of them)')
  start = time.perf_counter()
  if null_model:
    swapper = swapper_lib.PassThroughSwapper(null_size, batch_size=batch_size)
    identity = swapper.identity()
  else:
    swapper = swapper_lib.load_swapper(checkpoint, batch_size=batch_size)
    if source:
      identity = swapper.identity(source)
    else:
      dim = int(swapper.meta['model']['id_dim'])
      identity = np.random.default_rng(0).normal(size=dim).astype(np.float32)
      identity /= np.linalg.norm(identity)
  _warm_up(swapper, identity, batch_size)
  setup_s = time.perf_counter() - start
  env = machine.environment()
  with tempfile.TemporaryDirectory(prefix='fsjax-bench-video-') as folder:
    stats = video.swap_video(swapper, identity, clip, os.path.join(folder, 'out.mp4'),
                             faces=faces, batch_size=batch_size, progress=False,
                             detect_every=detect_every, detect_max_side=detect_max_side,
                             tracker_options=tracker_options)
  frames = max(1, stats['frames'])
  return {
      'mode': 'video',
      'fps': stats['frames'] / stats['seconds'],
      'stages': {k: 1e3 * v / frames for k, v in stats['stage_seconds'].items()},
      # CPU time per frame (threads; whole process + ffmpeg): on a shared machine these
      # move less with the load than the wall-clock figures.
      'thread_cpu_ms_per_frame': {k: 1e3 * v / frames
                                  for k, v in stats['thread_cpu_seconds'].items()},
      'cpu_ms_per_frame': 1e3 * stats['cpu_seconds'] / frames,
      'frames': stats['frames'],
      'frames_with_face': stats['frames_with_face'],
      'frames_with_face_fraction': stats['frames_with_face'] / frames,
      'faces_swapped': stats['faces_swapped'],
      'keyframes': stats['keyframes'],
      'tracker': stats['tracker'],
      'persons': stats['persons'],
      'clip': os.path.abspath(clip),
      'width': stats['width'], 'height': stats['height'], 'video_fps': stats['fps'],
      'image_size': swapper.image_size,
      'null_model': bool(null_model),
      'checkpoint': os.path.abspath(checkpoint) if checkpoint else None,
      'batch_size': batch_size, 'detect_every': detect_every,
      'detect_max_side': detect_max_side,
      'seconds': stats['seconds'], 'setup_s': setup_s,
      'environment': dict(env, load_avg_1m_end=machine.load_average()),
  }


def format_video(result: dict[str, Any]) -> str:
  """Three lines: frames/s and frames with a face, ms/frame per stage, CPU ms/frame."""
  model = 'pass-through model' if result['null_model'] else f"{result['image_size']} px model"
  stages = '  '.join(f'{k} {v:.1f}' for k, v in result['stages'].items())
  threads = '  '.join(f'{k} {v:.1f}' for k, v in result['thread_cpu_ms_per_frame'].items())
  return (f"video {result['width']}x{result['height']} ({model}): {result['fps']:.2f} frames/s "
          f"end to end, {result['frames_with_face']}/{result['frames']} frames with a face, "
          f"{result['keyframes']} keyframes\n"
          f"ms/frame per stage (stages overlap): {stages}\n"
          f"CPU ms/frame: {result['cpu_ms_per_frame']:.1f} in all (with ffmpeg); by thread: "
          f"{threads}")
