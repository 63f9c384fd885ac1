"""Benchmark of swapping: model-only swaps/s by batch size and end to end (detection,
alignment, model, paste-back) with a random-weight Swapper of a config's sizes."""

from __future__ import annotations

import time
from typing import Any

import ml_collections

from fsjax.bench import train as bench_train_lib
from fsjax.swap import swapper as swapper_lib


def bench_swap(config: ml_collections.ConfigDict, *, batches: tuple[int, ...] = (1, 32),
               repeats: int = 3, end_to_end: bool = True) -> dict[str, Any]:
  """Swap throughput of a random-weight Swapper of the config's sizes (fsjax.swap.swapper).

  Args:
    config: training config (image_size, model.*, identity.arch, dataset.alignment).
    batches: faces per model call / frames per end-to-end call.
    repeats: timed model calls per batch size.
    end_to_end: also time detection + alignment + model + paste-back (one call per batch).
  Returns:
    {'mode': 'swap', 'rows': [per batch: model_swaps_per_s, end_to_end_swaps_per_s,
    detect_ms_per_frame], ...} with 'swap_b<B>_model_per_s' etc. flattened too.
  """
  config = bench_train_lib.bench_config(config)
  result: dict[str, Any] = {'mode': 'swap', 'framework': 'jax',
                            'image_size': int(config.image_size), 'dtype': config.model.dtype}
  t0 = time.perf_counter()
  swapper = swapper_lib.random_swapper(config, batch_size=max(batches))
  result['setup_s'] = time.perf_counter() - t0
  rows = []
  for b in batches:
    figures = swapper_lib.measure_swap(swapper, int(b), repeats=repeats,
                                       end_to_end_repeats=1 if end_to_end else 0)
    rows.append(figures)
    result[f'swap_b{b}_model_per_s'] = figures['model_swaps_per_s']
    if 'end_to_end_swaps_per_s' in figures:
      result[f'swap_b{b}_end_to_end_per_s'] = figures['end_to_end_swaps_per_s']
    result[f'swap_b{b}_detect_ms_per_frame'] = figures['detect_ms_per_frame']
  result['rows'] = rows
  return result
