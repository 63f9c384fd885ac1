"""Building fsjax datasets without TensorFlow: library (`build_dataset`) and `fsjax build`.

Each check runs in a fresh interpreter where `import tensorflow` fails as if TensorFlow were
not installed, builds tiny datasets to array_record and reads them back with
tfds.data_source.
"""

import json
import os
import subprocess
import sys
import textwrap

_HIDE_TF = textwrap.dedent('''
    import importlib.machinery, sys

    class _HideTensorFlow:
      """Makes `import tensorflow` fail as if it were not installed."""
      def __init__(self, inner):
        self.inner = inner
      def find_spec(self, name, path=None, target=None):
        if name == 'tensorflow' or name.startswith('tensorflow.'):
          return None
        return self.inner.find_spec(name, path, target)
      def __getattr__(self, attr):
        return getattr(self.inner, attr)

    sys.meta_path[:] = [_HideTensorFlow(f) if f is importlib.machinery.PathFinder else f
                        for f in sys.meta_path]
''')

_BUILD_SCRIPT = _HIDE_TF + textwrap.dedent('''
    import json
    import numpy as np
    import tensorflow_datasets as tfds
    from fsjax.data import build, synthetic_faces as sf
    from tfds_builders.synthetic_faces import SyntheticFacesConfig

    data_dir = sys.argv[1]
    out = {}
    for name, pairs in (('tiny', False), ('tinypairs', True)):
      # The pairs config renders in 2 worker processes (batches of 2), the faces in-process;
      # the faces have 2 images per train identity and 3 per test identity.
      config = SyntheticFacesConfig(name=name, size=32, pairs=pairs, train_identities=3,
                                    test_identities=2, images_per_identity=2,
                                    test_images_per_identity=3, train_pairs=0,
                                    test_pairs=3, batch_size=2 if pairs else 4,
                                    num_workers=2 if pairs else 1)
      build.build_dataset('synthetic_faces', data_dir, config=config, verbose=False)
      source = tfds.data_source(f'synthetic_faces/{name}', data_dir=data_dir)
      out[name] = {k: len(v) for k, v in source.items()}
      for split, data in source.items():
        for i in range(len(data)):
          ex = data[i]
          if pairs:  # The stored swap is the render of (source identity, target attributes)
            # with the hair laid out on the target's head (3.0.0).
            swap = sf.render_batch(ex['identity_params'][None], ex['attribute_params'][None],
                                   32, hair_identity=ex['target_identity_params'][None])[0]
            assert np.array_equal(ex['swap'], swap)
            assert not np.array_equal(
                ex['swap'], sf.render(ex['identity_params'], ex['attribute_params'], 32))
            assert ex['source_label'] != ex['target_label']
          else:  # Stored images are exactly the renders of their stored parameters.
            img = sf.render(ex['identity_params'], ex['attribute_params'], 32)
            assert np.array_equal(ex['image'], img), (split, i)
            out.setdefault('labels_' + split, []).append(int(ex['label']))
    out['format'] = build.get_builder('synthetic_faces/tiny', data_dir).info.file_format.value
    out['tf_imported'] = 'tensorflow' in sys.modules
    print('RESULT' + json.dumps(out))
''')

_CLI_SCRIPT = _HIDE_TF + textwrap.dedent('''
    import json
    from fsjax import main
    code = main.run(['fsjax', 'build', 'aligned_faces/ffhq', '--data_dir', sys.argv[1],
                     '--manual_dir', sys.argv[2]])
''')

_READ_SCRIPT = _HIDE_TF + textwrap.dedent('''
    import json
    import tensorflow_datasets as tfds
    from fsjax.data import build
    source = build.get_builder('aligned_faces/ffhq', sys.argv[1]).as_data_source()['train']
    ex = source[0]
    print('RESULT' + json.dumps({'n': len(source), 'shape': list(ex['image'].shape),
                                 'label': int(ex['label']),
                                 'tf_imported': 'tensorflow' in sys.modules}))
''')

_DUMMY = os.path.join(os.path.dirname(__file__), '..', 'tfds_builders', 'aligned_faces',
                      'dummy_data')


def _run(tmp_path, script, *args):
  path = tmp_path / 'script.py'
  path.write_text(script)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  run = subprocess.run([sys.executable, str(path), *args], env=env, capture_output=True,
                       text=True, timeout=150)
  assert run.returncode == 0, run.stderr[-3000:]
  return run


def _result(run):
  line = [l for l in run.stdout.splitlines() if l.startswith('RESULT')][-1]
  return json.loads(line[len('RESULT'):])


def test_synthetic_build_and_read_without_tensorflow(tmp_path):
  out = _result(_run(tmp_path, _BUILD_SCRIPT, str(tmp_path / 'data')))
  assert out['tf_imported'] is False
  assert out['format'] == 'array_record'
  assert out['tiny'] == {'train': 6, 'test': 6}
  assert out['tinypairs'] == {'test': 3}
  assert sorted(out['labels_train']) == [0, 0, 1, 1, 2, 2]
  assert sorted(out['labels_test']) == [3, 3, 3, 4, 4, 4]  # Held-out identities follow train.


def test_fsjax_build_command_without_tensorflow(tmp_path):
  data_dir = str(tmp_path / 'data')
  run = _run(tmp_path, _CLI_SCRIPT, data_dir, _DUMMY)
  # The command prints the bad-file report and where the data went.
  assert 'skipped (not square): 1' in run.stdout
  assert 'aligned_faces/ffhq: ready at' in run.stdout
  report = json.loads(open(os.path.join(data_dir, 'aligned_faces', 'ffhq', '1.0.0',
                                        'build_report.json')).read())
  assert report['splits']['train']['examples'] == 3
  out = _result(_run(tmp_path, _READ_SCRIPT, data_dir))
  assert out == {'n': 3, 'shape': [256, 256, 3], 'label': -1, 'tf_imported': False}


def test_ordered_map_keeps_order_in_spawned_workers(monkeypatch):
  import multiprocessing  # pylint: disable=g-import-not-at-top
  import operator  # pylint: disable=g-import-not-at-top
  from fsjax.data import tfds_utils  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(tfds_utils, '_mp_context', lambda: multiprocessing.get_context('spawn'))
  tasks = [(i, 10 * i) for i in range(7)]
  assert list(tfds_utils.ordered_map(operator.add, tasks, 2)) == [11 * i for i in range(7)]
  assert list(tfds_utils.ordered_map(operator.add, tasks, 1)) == [11 * i for i in range(7)]
