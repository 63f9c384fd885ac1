"""Swap throughput on this machine (README figures): model only and end to end, batch 1 and 32.

  python scripts/measure_swap.py configs/tiny.py [configs/synthetic.py ...]

Uses random weights of each config's sizes (speed does not depend on the weights) and
skimage.data.astronaut() (512 x 512, one face) as the frame; see fsjax.swap.swapper.measure_swap.
"""

import json
import os
import sys

import jax

from fsjax.train import config_files
from fsjax.swap import swapper as swapper_lib


def main(paths):
  print(f'# {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, jax {jax.__version__}')
  for path in paths:
    config = config_files.load(path)
    swapper = swapper_lib.random_swapper(config, batch_size=32)
    for batch in (1, 32):
      figures = swapper_lib.measure_swap(swapper, batch)
      print(json.dumps({'config': path, **{k: round(v, 2) if isinstance(v, float) else v
                                           for k, v in figures.items()}}), flush=True)


if __name__ == '__main__':
  main(sys.argv[1:] or ['configs/tiny.py'])
