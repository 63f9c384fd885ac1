"""The synthetic protocol's estimators, built on first use and cached (like a downloaded
Hopenet): the pose / expression regressor and the independent recognizer.

Both train on synthetic_faces train identities and measure themselves on the held-out
ones; configs/eval_estimators.py holds their settings. Each lives in
CACHE/eval/<kind>-<key>/ (fsjax.eval.cache: the key covers the config and the dataset's
fingerprint), written under a temporary name and renamed when complete, so an interrupted
build leaves nothing that looks finished. The recognizer's ArcFace run keeps its
checkpoints next to it (<entry>.run/) until it is done, so an interrupted build resumes.
"""

import copy
import os
import shutil
from typing import Callable, Optional

import ml_collections

from fsjax.eval import atomic
from fsjax.eval import cache
from fsjax.eval import regressor

Log = Callable[[str], None]
REGRESSOR_KIND = 'pose_expression'
RECOGNIZER_KIND = 'recognizer'


def regressor_entry(config: ml_collections.ConfigDict, data_dir: str = '',
                    cache_dir: str = '') -> tuple[str, dict]:
  """(cache folder, dataset fingerprint) of the regressor of `config`."""
  dataset = cache.fingerprint(config.dataset, data_dir)
  return cache.entry(REGRESSOR_KIND, config.to_dict(), dataset, cache_dir), dataset


def recognizer_entry(config: ml_collections.ConfigDict, data_dir: str = '',
                     cache_dir: str = '') -> str:
  """The cache folder of the recognizer of ArcFace config `config` (its checkpoint is
  <folder>/identity)."""
  key_config = config.to_dict()
  key_config['dataset'] = dict(key_config['dataset'], data_dir='')  # the fingerprint covers it
  dataset = cache.fingerprint(config.dataset.name, data_dir)
  return cache.entry(RECOGNIZER_KIND, key_config, dataset, cache_dir)


def attribute_estimator(config: ml_collections.ConfigDict, data_dir: str = '',
                        cache_dir: str = '', log: Log = print
                        ) -> regressor.AttributeEstimator:
  """The pose / expression regressor of `config` (the `regressor` block), trained once.

  Args:
    config: configs/eval_estimators.py `regressor`.
    data_dir: TFDS data dir of config.dataset ('' = TFDS default); built when missing.
    cache_dir: cache root ('' = $FSJAX_CACHE or ~/.cache/fsjax).
    log: progress lines.
  """
  from fsjax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  path, dataset = regressor_entry(config, data_dir, cache_dir)
  if os.path.isfile(os.path.join(path, regressor.META_FILE)):
    return regressor.load(path)
  log(f'building the pose/expression estimator (once; cached in {path})')
  source_cfg = ml_collections.ConfigDict({'name': config.dataset, 'data_dir': data_dir})
  size = int(config.image_size)
  log(f'reading {config.dataset} train images')
  images, targets = regressor.read_split(input_pipeline.create_data_source(source_cfg, 'train'),
                                         size, int(config.max_train_images), log)
  log(f'training on {len(images)} images of train identities, '
      f'{int(config.num_train_steps)} steps')
  params, meta = regressor.train(config, images, targets, log)
  del images
  test_images, test_targets = regressor.read_split(
      input_pipeline.create_data_source(source_cfg, 'test'), size,
      int(config.max_eval_images), log)
  estimator = regressor.AttributeEstimator(params, meta)
  meta['held_out'] = regressor.errors(estimator.predict_targets(test_images), test_targets)
  meta['dataset'] = dataset
  held = meta['held_out']
  log(f'pose/expression estimator: held-out pose error {held["pose_error"]:.2f} deg, '
      f'expression error {held["expression_error"]:.3f} ({held["num_images"]} images of '
      f'unseen identities)')
  with atomic.atomic_dir(path, replace=False) as tmp:
    regressor.save(tmp, params, meta)
  return regressor.load(path)


def independent_recognizer(config: ml_collections.ConfigDict, data_dir: str = '',
                           cache_dir: str = '', log: Log = print) -> str:
  """The identity checkpoint dir of the independent recognizer (an ArcFace config, the
  `recognizer` block), trained once with fsjax.identity.trainer.

  Its held-out verification is in the checkpoint's identity.json ('verification').
  """
  from fsjax.identity import checkpoint  # pylint: disable=g-import-not-at-top
  from fsjax.identity import trainer  # pylint: disable=g-import-not-at-top
  path = recognizer_entry(config, data_dir, cache_dir)
  identity_dir = os.path.join(path, 'identity')
  if os.path.isfile(os.path.join(identity_dir, checkpoint.META_FILE)):
    return identity_dir
  log(f'building the independent recognizer (once; cached in {path}): ArcFace layers '
      f'{tuple(config.model.layers)}, width {config.model.width}, '
      f'{config.model.embedding_dim}-d, seed {config.seed}, {config.num_train_steps} steps')
  run_config = copy.deepcopy(config)
  with run_config.unlocked():
    run_config.dataset.data_dir = data_dir
  run_dir = path + '.run'
  with atomic.atomic_dir(path, replace=False) as tmp:
    result = trainer.train_and_evaluate(run_config, run_dir,
                                        identity_dir=os.path.join(tmp, 'identity'))
    if result['identity_dir'] is None:
      raise RuntimeError(f'recognizer training in {run_dir} stopped early (preempted); '
                         'run again to resume')
    ev = result['eval'] or {}
    if ev:
      log(f'independent recognizer: held-out verification accuracy {ev["accuracy"]:.4f}, '
          f'TAR@FAR={ev["far"]:g} {ev["tar_at_far"]:.4f} ({int(ev["num_pairs"])} pairs)')
  shutil.rmtree(run_dir, ignore_errors=True)
  return identity_dir


def recognizer_verification(identity_dir: str) -> Optional[dict]:
  """The held-out verification an fsjax-trained identity checkpoint recorded, or None."""
  from fsjax.identity import checkpoint  # pylint: disable=g-import-not-at-top
  return checkpoint.read_meta(identity_dir).get('verification')
