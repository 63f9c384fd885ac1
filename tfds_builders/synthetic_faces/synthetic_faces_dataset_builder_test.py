"""TFDS conformance test of synthetic_faces on tiny configs (faces and pairs)."""

import tensorflow_datasets as tfds

from tfds_builders import array_record_testing
from tfds_builders.synthetic_faces import synthetic_faces_dataset_builder as sf_builder

_TINY = dict(size=32, train_identities=2, test_identities=2, images_per_identity=2,
             train_pairs=4, test_pairs=4, batch_size=3, num_workers=1)


class SyntheticFacesTest(array_record_testing.ArrayRecordAsDataSourceMixin,
                         tfds.testing.DatasetBuilderTestCase):
  """Builds 32 px face, pairs and occluded-pairs configs (array_record), reads them back."""
  DATASET_CLASS = sf_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = [
      sf_builder.SyntheticFacesConfig(name='tiny32', description='tiny faces', **_TINY),
      sf_builder.SyntheticFacesConfig(name='tinypairs32', description='tiny pairs', pairs=True,
                                      **_TINY),
      sf_builder.SyntheticFacesConfig(name='tinyoccluded32', description='tiny occluded pairs',
                                      pairs=True, occluded=True, **_TINY),
  ]
  SPLITS = {'train': 4, 'test': 4}
  SKIP_CHECKSUMS = True


if __name__ == '__main__':
  tfds.testing.test_main()
