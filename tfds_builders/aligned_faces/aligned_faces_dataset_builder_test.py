"""TFDS conformance test of aligned_faces on dummy data that includes every kind of bad file.

dummy_data/ is made by dummy_data/make_dummy_data.py (astronaut crops, synthetic faces and
bad files); each test class builds one or two configs and then checks the build report.
"""

import json

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from fsjax import faces as faces_lib
from tfds_builders import array_record_testing
from tfds_builders.aligned_faces import aligned_faces_dataset_builder as af_builder

# One detector for all configs of this test (loading the dlib models takes seconds).
_DETECTOR = faces_lib.DlibDetector()


class _AlignedFacesMixin(array_record_testing.ArrayRecordAsDataSourceMixin):
  """Shared set-up (not a TestCase itself, so pytest does not collect it)."""
  DATASET_CLASS = af_builder.Builder
  SKIP_CHECKSUMS = True

  def _make_builder(self, config=None):
    builder = super()._make_builder(config=config)
    builder._detector = _DETECTOR  # pylint: disable=protected-access
    return builder

  def _download_and_prepare_as_dataset(self, builder):
    super()._download_and_prepare_as_dataset(builder)
    report = json.loads((epath.Path(builder.data_dir) / af_builder.REPORT_NAME).read_text())
    self.check_build(builder, report)

  def check_build(self, builder, report):
    del builder, report


class FolderTest(_AlignedFacesMixin, tfds.testing.DatasetBuilderTestCase):
  """folder: largest face per photo; bad files skipped and counted, convertible ones kept."""
  BUILDER_CONFIG_NAMES_TO_TEST = ['folder']
  # alice: jpg, gray, cmyk, rgba, 16-bit, large (6); bob: 2 synthetic; group photo (1).
  SPLITS = {'train': 9}

  def check_build(self, builder, report):
    train = report['splits']['train']
    self.assertEqual(train['skipped'], {
        'empty file': 1, 'image too large': 1, 'no face': 1, 'not an image': 1,
        'truncated image': 1})
    self.assertEqual(train['converted'], {'16-bit': 1, 'CMYK': 1, 'alpha': 1, 'grayscale': 2})
    self.assertEqual((train['files'], train['examples'], train['ignored']), (14, 9, 1))
    self.assertEqual(train['extra_faces'], 1)  # the second face of the group photo
    names = json.loads((epath.Path(builder.data_dir) / af_builder.LABEL_NAMES).read_text())
    self.assertEqual(names['train']['names'], ['alice', 'bob'])
    source = builder.as_data_source('train')
    labels = {}
    for i in range(len(source)):
      ex = source[i]
      labels[ex['source'].decode()] = int(ex['label'])
      # Every crop is FFHQ-aligned: the detected eyes land near the same crop positions.
      lm = ex['landmarks5']
      self.assertTrue(np.all((lm > 0) & (lm < 256)))
      self.assertLess(abs(lm[0, 1] - lm[1, 1]), 12)
    self.assertEqual(labels['alice/astronaut_cmyk.jpg'], 0)
    self.assertEqual(labels['bob/synthetic_0.png'], 1)
    self.assertEqual(labels['group.jpg'], -1)


class FolderAllFacesTest(_AlignedFacesMixin, tfds.testing.DatasetBuilderTestCase):
  """folder_all_faces: the group photo gives both faces."""
  BUILDER_CONFIG_NAMES_TO_TEST = ['folder_all_faces']
  SPLITS = {'train': 10}

  def check_build(self, builder, report):
    source = builder.as_data_source('train')
    groups = [i for i in range(len(source)) if source[i]['source'] == b'group.jpg']
    self.assertLen(groups, 2)
    self.assertEqual(report['splits']['train']['extra_faces'], 0)


class AlignedConfigsTest(_AlignedFacesMixin, tfds.testing.DatasetBuilderTestCase):
  """ffhq and celeba_hq (validate + resize, no detection)."""
  BUILDER_CONFIG_NAMES_TO_TEST = ['ffhq', 'celeba_hq']
  # ffhq: 3 good (wide and truncated skipped); celeba_hq: 3 good. SPLITS applies to both.
  SPLITS = {'train': 3}

  def check_build(self, builder, report):
    source = builder.as_data_source('train')
    labels = {source[i]['source'].decode(): int(source[i]['label']) for i in range(len(source))}
    if builder.builder_config.name == 'ffhq':
      self.assertEqual(report['splits']['train']['skipped'],
                       {'not square': 1, 'truncated image': 1})
      self.assertEqual(set(labels.values()), {-1})
    else:  # CelebA identities from the mapping files.
      self.assertEqual(labels, {'0.jpg': 7, '1.jpg': 9, '2.jpg': 7})
    self.assertTrue(np.all(source[0]['landmarks5'] == -1))


class TreeConfigsTest(_AlignedFacesMixin, tfds.testing.DatasetBuilderTestCase):
  """vggface2: train/test trees; test identities get labels after the train ones."""
  BUILDER_CONFIG_NAMES_TO_TEST = ['vggface2']
  SPLITS = {'train': 3, 'test': 1}

  def check_build(self, builder, report):
    self.assertEqual(report['splits']['test']['skipped'], {'empty file': 1})
    test = builder.as_data_source('test')
    self.assertEqual(int(test[0]['label']), 2)
    self.assertEqual(test[0]['source'], b'test/n000003/0001_01.png')


class ArcFaceTest(_AlignedFacesMixin, tfds.testing.DatasetBuilderTestCase):
  """arcface112: 112 px crops whose landmarks sit on the ArcFace template."""
  BUILDER_CONFIG_NAMES_TO_TEST = ['arcface112']
  SPLITS = {'train': 3}

  def check_build(self, builder, report):
    del report
    source = builder.as_data_source('train')
    template = faces_lib.arcface_template(112)
    for i in range(len(source)):
      err = np.abs(source[i]['landmarks5'] - template).max()
      self.assertLess(err, 6.0)  # least-squares fit of 5 points: small residual
    self.assertEqual(sorted(int(source[i]['label']) for i in range(len(source))), [0, 0, 1])


if __name__ == '__main__':
  tfds.testing.test_main()
