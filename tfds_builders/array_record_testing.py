"""Test helper: tfds.testing.DatasetBuilderTestCase checks for builders that write array_record.

TFDS's test case reads splits back with `builder.as_dataset`, which TFDS does not implement for
array_record; this mixin replaces that check by the same checks through
`builder.as_data_source()` (what fsjax reads with): example count per split, every feature's
shape and dtype, and no example shared between splits.
"""

import hashlib
import itertools

import numpy as np


def _digest(example) -> str:
  h = hashlib.sha1()
  for key in sorted(example):
    value = example[key]
    h.update(key.encode())
    h.update(value if isinstance(value, bytes) else np.asarray(value).tobytes())
  return h.hexdigest()


class ArrayRecordAsDataSourceMixin:
  """Put before tfds.testing.DatasetBuilderTestCase in the bases of a builder test."""

  def _assertAsDataset(self, builder):  # pylint: disable=invalid-name
    self.assertEqual(builder.info.file_format.value, 'array_record')
    tensor_info = builder.info.features.get_tensor_info()
    digests = {}
    for split, expected in self.SPLITS.items():
      source = builder.as_data_source(split=split)
      self.assertLen(source, expected)
      digests[split] = set()
      for i in range(len(source)):
        example = source[i]
        self.assertEqual(set(example), set(tensor_info))
        for key, info in tensor_info.items():
          value = np.asarray(example[key])
          if np.dtype(info.np_dtype) == np.object_:  # Text: decoded as bytes
            self.assertIn(value.dtype.kind, ('S', 'U', 'O'), key)
          else:
            self.assertEqual(value.dtype, np.dtype(info.np_dtype), key)
          self.assertEqual(value.ndim, len(info.shape), key)
          for got, want in zip(value.shape, info.shape):
            if want is not None:
              self.assertEqual(got, want, key)
        digests[split].add(_digest(example))
    for (s1, d1), (s2, d2) in itertools.combinations(digests.items(), 2):
      if s1 not in self.OVERLAPPING_SPLITS and s2 not in self.OVERLAPPING_SPLITS:
        self.assertFalse(d1 & d2, f'splits {s1} and {s2} share examples')
