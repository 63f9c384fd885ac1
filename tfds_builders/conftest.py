"""pytest set-up for the TFDS builder tests."""


def pytest_collection_modifyitems(config, items):
  """Drops tf.test.TestCase.test_session, a helper inherited by tfds.testing test cases that
  pytest collects as a test and that only reports 'Not a test.' as a skip."""
  kept = [item for item in items if item.name != 'test_session']
  if len(kept) != len(items):
    config.hook.pytest_deselected(items=[i for i in items if i.name == 'test_session'])
    items[:] = kept
