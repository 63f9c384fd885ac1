"""synthetic_faces: procedural faces with known identity and attributes, and ground-truth swaps.

Built offline from fsjax.data.synthetic_faces (no download, no TensorFlow):

  fsjax build synthetic_faces/64
  tfds build tfds_builders/synthetic_faces --config=64     # the same through the TFDS CLI

Configs '64', '128', '256' and '112' hold single faces (splits 'train' and 'test', the test
identities never appear in train); 'ids112' is '112' with 9000 train identities of 4 images
(more identities for the ArcFace encoder, same test split); 'pairs64', 'pairs128' and
'pairs256' hold (source, target, swap) triples where swap = render(identity of source,
attributes of target, scalp hair laid out on the target's head) is the correct face swap; 'occluded64', 'occluded128' and
'occluded256' are their test pairs with an occluder (glasses or a hand) on every target, kept
by the true swap, and the occluder's pixel mask (`occluder_mask`): HEAR-Net's benchmark.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from fsjax.data import synthetic_faces
from fsjax.data import tfds_utils


@dataclasses.dataclass
class SyntheticFacesConfig(tfds.core.BuilderConfig):
  """How many faces to render, at which size.

  Attributes:
    size: image side in pixels.
    pairs: False: single faces with labels; True: (source, target, swap) triples.
    occluded: pairs whose targets all carry an occluder, plus its mask
      (synthetic_faces.pair_records).
    seed: everything is a pure function of (seed, split, index).
    train_identities / test_identities: identities per split (single-face configs).
    images_per_identity: images (attribute draws) per identity.
    test_images_per_identity: the same for the test split (0: images_per_identity).
    train_pairs / test_pairs: triples per split (pair configs; 0 leaves the split out). Test
      pairs use the held-out test identities.
    batch_size: images rendered per vectorised call (one task of a worker process).
    num_workers: worker processes rendering in parallel (0: the CPU count, at most 8; 1: in
      the building process). Results do not depend on it.
  """
  size: int = 64
  pairs: bool = False
  occluded: bool = False
  seed: int = 0
  train_identities: int = 3000
  test_identities: int = 300
  images_per_identity: int = 6
  test_images_per_identity: int = 0
  train_pairs: int = 2000
  test_pairs: int = 1000
  batch_size: int = 64
  num_workers: int = 0


def _faces_config(size: int) -> SyntheticFacesConfig:
  return SyntheticFacesConfig(
      name=str(size), size=size,
      description=f'{size}x{size} synthetic faces: 3000 train and 300 held-out test identities, '
      '6 images each, with identity and attribute parameters.')


def _identities_config(size: int, identities: int, per_identity: int) -> SyntheticFacesConfig:
  return SyntheticFacesConfig(
      name=f'ids{size}', size=size, train_identities=identities,
      images_per_identity=per_identity, test_images_per_identity=6,
      description=f'{size}x{size} synthetic faces for identity encoders: {identities} train '
      f'identities x {per_identity} images; test: the 300 held-out identities x 6 images of '
      f'config {size!r} (same renders, labels numbered after the train ones).')


def _pairs_config(size: int) -> SyntheticFacesConfig:
  return SyntheticFacesConfig(
      name=f'pairs{size}', size=size, pairs=True,
      description=f'{size}x{size} (source, target, ground-truth swap) triples: 2000 train '
      'pairs, 1000 test pairs of held-out identities.')


def _occluded_config(size: int) -> SyntheticFacesConfig:
  return SyntheticFacesConfig(
      name=f'occluded{size}', size=size, pairs=True, occluded=True, train_pairs=0,
      description=f'The 1000 test pairs of pairs{size} with glasses or a hand on every target '
      '(none on the source), kept by the ground-truth swap; occluder_mask: its coverage in the '
      'swap (0-255).')


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for synthetic_faces."""

  VERSION = tfds.core.Version('3.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release.',
      '2.0.0': 'Scalp hair (colour, hairline, volume, length, parting) and neck width are '
               'attributes (of the target), as in FaceShifter / FF++ where only the inner face '
               'is swapped; brows and beard take a new identity colour (brow_r/g/b). '
               'identity_params 49 -> 44 values, attribute_params 38 -> 46 (the 38 of 1.0.0 '
               'first, same order). Ground-truth swaps keep the target\'s hair.',
      '3.0.0': 'Ground-truth swaps lay the scalp hair out on the target\'s head (2.0.0: on '
               'the source\'s, so the hair silhouette and hairline followed the source\'s face '
               'size, 41 % of a swap\'s error); pair configs add target_identity_params. '
               'Single-face configs and the sources and targets of pairs are unchanged.',
  }
  BUILDER_CONFIGS = [_faces_config(64), _faces_config(128), _faces_config(256),
                     _faces_config(112), _identities_config(112, 9000, 4), _pairs_config(64),
                     _pairs_config(128), _pairs_config(256), _occluded_config(64),
                     _occluded_config(128), _occluded_config(256)]
  DEFAULT_BUILDER_CONFIG_NAME = '64'

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    tfds_utils.prefer_array_record(self, file_format)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    image = lambda: tfds.features.Image(shape=(cfg.size, cfg.size, 3), encoding_format='png')
    id_params = tfds.features.Tensor(shape=(synthetic_faces.IDENTITY_DIM,), dtype=np.float32)
    att_params = tfds.features.Tensor(shape=(synthetic_faces.ATTRIBUTE_DIM,), dtype=np.float32)
    if cfg.pairs:
      features = {
          'source': image(),
          'target': image(),
          'swap': image(),
          'source_label': np.int64,
          'target_label': np.int64,
          'identity_params': id_params,  # of source (and swap)
          'attribute_params': att_params,  # of target (and swap)
          'target_identity_params': id_params,  # of target (the swap's hair head)
      }
      if cfg.occluded:
        features['occluder_mask'] = tfds.features.Image(shape=(cfg.size, cfg.size, 1),
                                                        encoding_format='png')
      keys = None
    else:
      features = {
          'image': image(),
          'label': np.int64,
          'identity_params': id_params,
          'attribute_params': att_params,
      }
      keys = ('image', 'label')
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        supervised_keys=keys,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    if cfg.pairs:
      splits = {}
      if cfg.train_pairs:
        splits['train'] = self._generate_examples('train', cfg.train_pairs)
      if cfg.test_pairs:
        splits['test'] = self._generate_examples('test', cfg.test_pairs)
      return splits
    return {
        'train': self._generate_examples('train', cfg.train_identities),
        'test': self._generate_examples('test', cfg.test_identities),
    }

  def _generate_examples(self, split: str, count: int):
    """Yields (key, example): count identities (faces) or count triples (pairs)."""
    if self.builder_config.pairs:
      return self._generate_pairs(split, count)
    return self._generate_faces(split, count)

  def _label_offset(self, split: str) -> int:
    """Labels are unique across splits: test identities follow the train ones."""
    return 0 if split == 'train' else self.builder_config.train_identities

  def _records(self, fn, split: str, total: int, *args):
    """Yields the (key, example) records 0..total-1 made by fn in batches (in parallel)."""
    cfg = self.builder_config
    tasks = [(cfg.seed, split, cfg.size, *args, self._label_offset(split), start,
              min(start + cfg.batch_size, total)) for start in range(0, total, cfg.batch_size)]
    workers = cfg.num_workers or tfds_utils.default_num_workers()
    for records in tfds_utils.ordered_map(fn, tasks, workers):
      yield from records

  def _generate_faces(self, split: str, num_identities: int):
    """Yields (key, example) for each image of each identity of the split."""
    cfg = self.builder_config
    per = (cfg.test_images_per_identity or cfg.images_per_identity) if split == 'test' else (
        cfg.images_per_identity)
    return self._records(synthetic_faces.face_records, split, num_identities * per, per)

  def _generate_pairs(self, split: str, num_pairs: int):
    """Yields (key, triple): source and target of different identities, and the true swap."""
    cfg = self.builder_config
    pool = cfg.train_identities if split == 'train' else cfg.test_identities
    fn = synthetic_faces.occluded_pair_records if cfg.occluded else synthetic_faces.pair_records
    return self._records(fn, split, num_pairs, pool)
