"""Benchmark of the input pipeline: pairs/s the grain pipeline delivers against what the
training step consumes."""

from __future__ import annotations

import logging
from typing import Any

import jax
import ml_collections
import numpy as np

from fsjax.bench import train as bench_train_lib
from fsjax.data import input_pipeline
from fsjax.train import parallel


def synthetic_source(config: ml_collections.ConfigDict, num_identities: int = 32,
                     per_identity: int = 4, seed: int = 0):
  """InMemorySource of PNG-encoded smooth noise 'faces' at image_size (decoded on every read)."""
  s = int(config.image_size)
  rs = np.random.RandomState(seed)
  n = num_identities * per_identity
  coarse = rs.randint(0, 256, (n, 8, 8, 3)).astype(np.float32)
  images = np.repeat(np.repeat(coarse, -(-s // 8), axis=1), -(-s // 8), axis=2)[:, :s, :s]
  images = np.clip(images + rs.normal(0, 8, images.shape), 0, 255).astype(np.uint8)
  labels = np.repeat(np.arange(num_identities), per_identity)
  return input_pipeline.InMemorySource(images, labels, encode_png=True)


def bench_data(config: ml_collections.ConfigDict, *, num_batches: int = 20,
               source: str = 'auto', train_result: dict | None = None) -> dict[str, Any]:
  """Pairs/s from the grain pair pipeline, against what the training step consumes.

  Args:
    config: training config (dataset.*, per_device_batch_size, image_size).
    num_batches: timed batches (after 2 warm-up batches).
    source: 'tfds' (config.dataset, must be prepared), 'memory' (PNG-encoded synthetic
      records of the configured size, decoded per read as TFDS does), or 'auto' (tfds when
      prepared, else memory).
    train_result: a `bench_train` result; its images_per_s is the consumption rate.
  Returns:
    {'pairs_per_s', 'source', 'train_pairs_per_s', 'headroom' (pipeline / train), ...};
    one pair is one training row (two images decoded).
  """
  config = bench_train_lib.bench_config(config)
  data_source, used = None, source
  if source in ('auto', 'tfds'):
    try:
      data_source = input_pipeline.create_data_source(config.dataset,
                                                      config.dataset.split)
      used = f'tfds:{config.dataset.name}'
    except Exception as e:  # pylint: disable=broad-except
      if source == 'tfds':
        raise
      logging.info('dataset %s not available (%s); using synthetic PNG records',
                   config.dataset.name, str(e).splitlines()[0])
  if data_source is None:
    data_source = synthetic_source(config)
    used = 'memory:synthetic_png'
  pairs_per_s = input_pipeline.measure_pipeline(config, data_source, int(num_batches))
  result: dict[str, Any] = {
      'mode': 'data', 'framework': 'grain', 'image_size': int(config.image_size),
      'source': used, 'num_workers': int(config.dataset.num_workers),
      'local_batch_size': parallel.local_batch_size(None, config.per_device_batch_size),
      'num_batches': int(num_batches), 'pairs_per_s': pairs_per_s,
      'images_decoded_per_s': 2 * pairs_per_s}
  if train_result and train_result.get('images_per_s'):
    # The step consumes global_batch pairs; this host feeds its share.
    share = jax.local_device_count() / max(jax.device_count(), 1)
    result['train_pairs_per_s'] = float(train_result['images_per_s']) * share
    result['headroom'] = pairs_per_s / result['train_pairs_per_s']
  return result
