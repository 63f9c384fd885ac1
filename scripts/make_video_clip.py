"""Writes the benchmark clips of docs/swap.md "Video" from one photo (read, never written).

  python scripts/make_video_clip.py PHOTO OUT.mp4 [--frames 300]           # moving clip
  python scripts/make_video_clip.py PHOTO OUT.mp4 --still [--frames 150]   # jitter clip

1280 x 720, 30 fps, H.264 CRF 20 (preset medium). The moving clip zooms 1 -> 1.5 -> 1 and
pans on a Lissajous path, with sensor noise sigma 1.5; `--still` keeps the photo fixed
(resized to 1280 x 720) with noise sigma 2, the clip the landmark jitter is measured on.
"""

import argparse
import sys

import cv2
import imageio_ffmpeg
import numpy as np

from fsjax.data import image_io

WIDTH, HEIGHT, FPS = 1280, 720, 30


def moving_frame(photo: np.ndarray, k: int, frames: int, rng) -> np.ndarray:
  """Frame k of the moving clip: `photo` [H, W, 3] float32 -> [720, 1280, 3] uint8."""
  h, w = photo.shape[:2]
  t = k / frames
  zoom = 1.0 + 0.5 * (0.5 - 0.5 * np.cos(2 * np.pi * t))
  win_w, win_h = w / zoom, h / zoom
  cx = w / 2 + (w - win_w) / 2 * 0.9 * np.sin(2 * np.pi * 1.5 * t)
  cy = h / 2 + (h - win_h) / 2 * 0.9 * np.sin(2 * np.pi * t + 0.7)
  s = WIDTH / win_w
  m = np.array([[s, 0, WIDTH / 2 - s * cx], [0, s, HEIGHT / 2 - s * cy]])
  f = cv2.warpAffine(photo, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)
  f = f + rng.normal(0, 1.5, f.shape).astype(np.float32)
  return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('photo')
  parser.add_argument('output')
  parser.add_argument('--frames', type=int, default=None, help='300 moving, 150 still')
  parser.add_argument('--still', action='store_true')
  args = parser.parse_args(argv)
  frames = args.frames or (150 if args.still else 300)
  if not args.output.endswith('.mp4') or frames < 1:
    print('error: the output must be an .mp4 and --frames at least 1', file=sys.stderr)
    return 2
  photo = image_io.load_rgb(args.photo)
  writer = imageio_ffmpeg.write_frames(
      args.output, (WIDTH, HEIGHT), fps=FPS, macro_block_size=1, quality=None,
      ffmpeg_log_level='error', output_params=['-crf', '20', '-preset', 'medium'])
  writer.send(None)
  if args.still:
    still = cv2.resize(photo, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA).astype(np.float32)
    rng = np.random.default_rng(1)
    for _ in range(frames):
      writer.send(np.clip(np.rint(still + rng.normal(0, 2.0, still.shape)), 0, 255)
                  .astype(np.uint8).tobytes())
  else:
    photo = photo.astype(np.float32)
    rng = np.random.default_rng(0)
    for k in range(frames):
      writer.send(np.ascontiguousarray(moving_frame(photo, k, frames, rng)).tobytes())
  writer.close()
  print(f'{args.output}: {frames} frames {WIDTH}x{HEIGHT} at {FPS} fps')
  return 0


if __name__ == '__main__':
  sys.exit(main())
