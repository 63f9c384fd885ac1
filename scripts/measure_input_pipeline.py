"""Prints the pair-pipeline throughput (examples/s) at 64 and 256 px on this host.

Records are PNG-encoded natural-image crops (skimage.data) decoded with OpenCV on every read,
as the TFDS array_record source does, so the figure includes decoding; or, with --dataset, a
prepared TFDS dataset (e.g. synthetic_faces/64).

  python scripts/measure_input_pipeline.py [--sizes 64,256] [--workers 0,2] [--repeats 3]
  python scripts/measure_input_pipeline.py --dataset synthetic_faces/64 --data_dir DIR

One example = one (X_s, X_t) pair = two decoded images. Median of --repeats runs.
"""

import argparse
import os

import numpy as np

from configs import default
from fsjax.data import input_pipeline


def natural_png_source(size: int, n: int = 512, seed: int = 0):
  """n PNG records [size, size, 3] cropped from skimage sample photos, 4 per label."""
  import cv2  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  pics = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(),
          skimage.data.rocket()]
  images = np.empty([n, size, size, 3], np.uint8)
  for i in range(n):
    pic = pics[i % len(pics)]
    h, w = pic.shape[:2]
    c = int(rng.integers(min(h, w) // 2, min(h, w)))
    y, x = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
    images[i] = cv2.resize(pic[y:y + c, x:x + c], (size, size), interpolation=cv2.INTER_AREA)
  return input_pipeline.InMemorySource(images, np.arange(n) // 4, encode_png=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='64,256')
  parser.add_argument('--workers', default='0,2')
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--color_jitter', type=float, default=0.0)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--dataset', default='', help='TFDS name/config instead of PNG crops')
  parser.add_argument('--data_dir', default='')
  args = parser.parse_args()
  print(f'host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}')
  sizes = [int(s) for s in args.sizes.split(',')]
  for size in sizes if not args.dataset else [None]:
    config = default.get_config()
    config.dataset.color_jitter = args.color_jitter
    if args.dataset:
      config.dataset.name, config.dataset.data_dir = args.dataset, args.data_dir
      source = input_pipeline.create_data_source(config.dataset, 'train')
      size = int(np.asarray(source[0]['image']).shape[0])
    else:
      source = natural_png_source(size)
    config.image_size = size
    num_batches = max(4, int(6e5 / (size * size)))  # ~ a few seconds each
    for workers in (int(w) for w in args.workers.split(',')):
      rates = [input_pipeline.measure_pipeline(config, source, num_batches, warmup_batches=3,
                                               batch_size=args.batch_size, num_workers=workers)
               for _ in range(args.repeats)]
      print(f'{size} px, batch {args.batch_size}, num_workers={workers}, '
            f'color_jitter={args.color_jitter}: {np.median(rates):.0f} pairs/s '
            f'(runs: {", ".join(f"{r:.0f}" for r in rates)})', flush=True)
  print(f'load average after: {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
  main()
