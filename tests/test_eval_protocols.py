"""`fsjax eval` end to end (issue #17): the FF++ protocol on an FF++-shaped folder built here
(short synthetic videos; real photos too when FSJAX_TEST_FACES is set), with precomputed
swaps of known answers and with a tiny export; the folder protocol; the synthetic protocol
on tiny pairs with tiny estimators; bad input."""

import json
import os
import shutil

import numpy as np
import pytest

from fsjax.eval import errors
from fsjax.eval import faceforensics
from fsjax.eval import media
from fsjax.eval import report
from fsjax.eval import run
from tests import eval_helpers
from tests import swap_helpers

FF_KEYS = {'id_retrieval_top1', 'id_retrieval_top5', 'pose_error', 'expression_error',
           'num_frames', 'num_videos', 'skipped', 'recognizers', 'videos',
           'unchanged_outside_mask'}
SYNTHETIC_KEYS = {'psnr', 'ssim', 'psnr_face', 'id_retrieval_top1', 'id_retrieval_top5',
                  'pose_error', 'expression_error', 'num_pairs', 'reference',
                  'unchanged_outside_mask'}


@pytest.fixture(scope='module')
def export_dir(tmp_path_factory):
  return swap_helpers.tiny_export(tmp_path_factory)[1]


@pytest.fixture(scope='module')
def detector():
  from fsjax.faces import detect  # pylint: disable=g-import-not-at-top
  return detect.DlibDetector()


@pytest.fixture(scope='module')
def ffpp(tmp_path_factory):
  """FF++ folder: originals 000, 001 (6 synthetic frames), 002 (undecodable), no 003;
  split [[000, 001], [000, 002], [003, 001]]; swaps: 000_001 = 001's first 4 frames
  re-encoded (the source itself, shorter), 001_000 = a copy of 001 (the target itself)."""
  root = str(tmp_path_factory.mktemp('ffpp'))
  clips = {'000': eval_helpers.synthetic_clip(0, 6), '001': eval_helpers.synthetic_clip(1, 6),
           '002': b'\x00 not a video'}
  videos = eval_helpers.make_ffpp(root, clips, [['000', '001'], ['000', '002'],
                                                ['003', '001']])
  swaps = os.path.join(root, 'swaps')
  eval_helpers.write_clip(os.path.join(swaps, '000_001.mp4'), clips['001'][:4])
  eval_helpers.copy_as_swap(videos, swaps, '001', '001_000')
  return {'root': root, 'swaps': swaps, 'clips': clips}


def _rows(result):
  return {row['name']: row for row in result['videos']}


def test_faceforensics_precomputed_swaps_known_answers(ffpp, detector, tmp_path):
  out = str(tmp_path / 'out')
  result = run.run_evaluation(protocol='faceforensics', data=ffpp['root'], swaps=ffpp['swaps'],
                              frames=3, output_dir=out, detector=detector, progress=False,
                              log=lambda s: None)
  assert FF_KEYS <= set(result)
  assert result['skipped'] == {'missing_video': 2, 'unreadable': 2, 'no_face': 0}
  assert result['num_videos'] == 2 and result['num_frames'] == 6
  rows = _rows(result)
  # The target itself as its swap: the pose, the expression and the frame are the target's.
  same = rows['001_000']
  assert same['pose_error'] == 0.0 and same['expression_error'] == 0.0
  assert same['unchanged_outside_mask'] == 1.0 and same['id_retrieval_top1'] == 0.0
  assert same['frame_indices'] == [1, 3, 5]
  # The source itself (4 frames): its identity is retrieved; indices over the shorter video.
  src = rows['000_001']
  assert src['id_retrieval_top1'] == 1.0
  assert src['lengths'] == {'target': 6, 'swap': 4} and 'shorter' in src['note']
  assert src['frame_indices'] == media.sample_indices(4, 3) == [0, 2, 3]
  assert result['id_retrieval_top1'] == 0.5 and result['id_retrieval_top5'] == 1.0
  assert rows['000_002']['skipped'] == 'unreadable'
  assert rows['003_001']['skipped'] == 'missing_video'
  with open(os.path.join(out, 'eval.json')) as f:
    on_disk = json.load(f)  # strict JSON (NaN written as null)
  assert on_disk['skipped'] == result['skipped']
  assert os.path.isfile(os.path.join(out, 'eval_grid.png'))
  assert not [n for n in os.listdir(tmp_path) if n != 'out']  # no temporary leftovers
  assert 'ID top-1' in result['report']


def test_faceforensics_with_a_checkpoint_cli(ffpp, export_dir, tmp_path, tmp_path_factory):
  out = str(tmp_path / 'eval')
  proc = swap_helpers.run_cli(
      ['eval', '--protocol', 'faceforensics', '--data', ffpp['root'], '--checkpoint',
       export_dir, '--frames', '1', '--num_pairs', '1', '--output', out],
      swap_helpers.cli_env(tmp_path_factory))
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(out, 'eval.json')) as f:
    result = json.load(f)
  assert FF_KEYS <= set(result)
  assert result['num_jobs'] == 2 and result['skipped']['missing_video'] == 0
  # Every sampled target frame was swapped; the random tiny model's faces may not be found.
  for row in result['videos']:
    assert row['frames'] + row['no_face'] == 1
  assert result['unchanged_outside_mask'] == 1.0  # the paste-back touches the face only
  assert 'ETA' in proc.stderr and 'ID top-1' in proc.stdout


def test_folder_protocol(ffpp, detector, tmp_path):
  a, b = ffpp['clips']['000'][2], ffpp['clips']['001'][2]
  swap_helpers.save(tmp_path / 'a.png', a)
  swap_helpers.save(tmp_path / 'b.png', b)
  eval_helpers.write_clip(str(tmp_path / 'clip_b.mp4'), ffpp['clips']['001'])
  swaps = tmp_path / 'swaps'
  swaps.mkdir()
  shutil.copy(tmp_path / 'b.png', swaps / 'a_b.png')  # the source itself
  shutil.copy(tmp_path / 'a.png', swaps / 'a_clip_b.png')  # the target itself
  (tmp_path / 'pairs.csv').write_text('source,target\nb.png,a.png\nclip_b.mp4,a.png\n'
                                      'missing.jpg,a.png\n')
  extra = _random_recognizer(str(tmp_path / 'recognizer'), embedding_dim=16)
  result = run.run_evaluation(pairs=str(tmp_path / 'pairs.csv'), swaps=str(swaps), frames=3,
                              recognizers={'mine': extra}, output_dir=str(tmp_path / 'out'),
                              detector=detector, progress=False, log=lambda s: None)
  assert result['protocol'] == 'folder'
  assert set(result['recognizers']) == {'dlib', 'mine'}
  assert result['recognizers']['mine']['cos_source'] <= 1.0 + 1e-6
  rows = _rows(result)
  assert rows['a_b']['id_retrieval_top1'] == 1.0
  assert rows['a_clip_b']['pose_error'] == 0.0 and rows['a_clip_b']['frame_indices'] == [0]
  assert result['skipped']['missing_video'] == 1
  assert result['num_identities'] == 3  # a.png, b.png, clip_b.mp4 (3 frames)


def test_real_photos(faces_dir, detector, export_dir, tmp_path):
  """obama / biden / alex as 3-frame videos; swaps = copies of the source video, then the
  tiny export's swaps."""
  names = {'000': 'obama.jpg', '001': 'biden.jpg', '002': 'alex-lacamoire.png'}
  clips = {k: eval_helpers.photo_clip(os.path.join(faces_dir, v), 3) for k, v in names.items()}
  root = str(tmp_path / 'ffpp')
  videos = eval_helpers.make_ffpp(root, clips, [['000', '001'], ['001', '002']])
  swaps = str(tmp_path / 'swaps')
  for target, source in (('000', '001'), ('001', '000'), ('001', '002'), ('002', '001')):
    eval_helpers.copy_as_swap(videos, swaps, source, f'{target}_{source}')
  result = run.run_evaluation(protocol='faceforensics', data=root, swaps=swaps, frames=2,
                              output_dir=str(tmp_path / 'out'), detector=detector,
                              progress=False, log=lambda s: None)
  assert result['num_frames'] == 8 and result['skipped']['no_face'] == 0
  assert result['id_retrieval_top1'] == 1.0  # dlib tells these three people apart
  assert result['recognizers']['dlib']['cos_source'] > 0.99
  assert result['recognizers']['dlib']['cos_target'] < 0.9
  assert result['pose_error'] > 1.0  # different heads in different poses
  made = run.run_evaluation(protocol='faceforensics', data=root, checkpoint=export_dir,
                            frames=1, num_pairs=1, output_dir=str(tmp_path / 'made'),
                            detector=detector, progress=False, log=lambda s: None)
  assert made['num_jobs'] == 2 and made['unchanged_outside_mask'] == 1.0
  assert all(row['frames'] + row['no_face'] == 1 for row in made['videos'])


@pytest.fixture(scope='module')
def tiny_synthetic(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  return data_dir, eval_helpers.tiny_synthetic_data(data_dir)


def _tiny_estimators(names) -> dict:
  """configs/eval_estimators.py overrides: few steps, the tiny datasets."""
  return {'regressor.dataset': names['faces'], 'regressor.num_train_steps': 3,
          'regressor.log_every_steps': 1, 'recognizer.dataset.name': names['faces112'],
          'recognizer.num_train_steps': 2, 'recognizer.per_device_batch_size': 2,
          'recognizer.checkpoint_every_steps': 0, 'recognizer.eval.num_pairs': 20,
          'recognizer.eval.batch_size': 16, 'recognizer.eval.folds': 2}


def _estimators_config(overrides):
  from configs import eval_estimators  # pylint: disable=g-import-not-at-top
  config = eval_estimators.get_config()
  config.update_from_flattened_dict(overrides)
  return config


def _random_recognizer(directory, embedding_dim=96):
  """A random-weight identity checkpoint (as a trained recognizer would be stored)."""
  # pylint: disable=g-import-not-at-top
  from fsjax.identity import checkpoint
  from fsjax.models import random_weights
  meta = checkpoint.make_meta((1, 1, 1, 1), 8, embedding_dim, 1e-5, stem_stride=2,
                              alignment='ffhq', verification={
                                  'accuracy': 0.5, 'best_accuracy': 0.5, 'tar_at_far': 0.0,
                                  'far': 1e-3, 'num_pairs': 20})
  module = checkpoint.module_from_meta(meta)
  variables = random_weights.random_variables(checkpoint.abstract_variables(module), 3)
  checkpoint.save_identity(directory, variables, meta)
  return directory


def test_synthetic_protocol_cli(tiny_synthetic, export_dir, tmp_path, tmp_path_factory):
  """The CLI builds the (tiny) regressor; the recognizer's cache entry is seeded with random
  weights here (training one costs a minute of compiles; its build path is tested below)."""
  from fsjax.eval import cache  # pylint: disable=g-import-not-at-top
  from fsjax.eval import estimators  # pylint: disable=g-import-not-at-top
  data_dir, names = tiny_synthetic
  cache_dir, out = str(tmp_path / 'cache'), str(tmp_path / 'eval')
  overrides = _tiny_estimators(names)
  config = _estimators_config(overrides)
  _random_recognizer(os.path.join(
      estimators.recognizer_entry(config.recognizer, data_dir, cache_dir), 'identity'))
  proc = swap_helpers.run_cli(
      ['eval', '--checkpoint', export_dir, '--pairs', names['pairs'], '--data_dir', data_dir,
       '--cache_dir', cache_dir, '--output', out] +
      [f'--estimators.{k}={v}' for k, v in overrides.items()],
      swap_helpers.cli_env(tmp_path_factory))
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(out, 'eval.json')) as f:
    result = json.load(f)
  assert result['protocol'] == 'synthetic'  # the default: the export's data is synthetic
  assert SYNTHETIC_KEYS <= set(result) and result['num_pairs'] == 12
  ref = result['reference']
  assert set(ref) == {'ground_truth', 'target', 'source'}
  assert ref['ground_truth']['psnr'] == 100.0 and ref['ground_truth']['ssim'] == 1.0
  assert ref['target']['pose_error'] == 0.0 and ref['target']['unchanged_outside_mask'] == 1.0
  assert ref['target']['expression_error'] == 0.0 and ref['target']['id_retrieval_top1'] == 0.0
  assert result['face_region']['ground_truth_rerender_match'] == 1.0
  held = result['estimators']['pose_expression']['held_out']
  assert held['num_images'] == 24 and held['pose_error'] > 0
  assert result['estimators']['recognizer']['verification']['accuracy'] == 0.5
  assert set(result['recognizers']) == {'independent', 'train'}
  assert 'own held-out error' in proc.stdout and 'return X_s' in proc.stdout
  assert 'building the pose/expression estimator' in proc.stderr
  assert 'building the independent recognizer' not in proc.stderr  # found in the cache
  cached = sorted(os.listdir(os.path.join(cache_dir, 'eval')))
  assert [c.split('-')[0] for c in cached] == ['pose_expression', 'recognizer']
  assert os.path.isfile(os.path.join(out, 'eval_grid.png'))

  # Cached: the same config loads without training; another config or dataset, elsewhere.
  lines = []
  estimator = estimators.attribute_estimator(config.regressor, data_dir, cache_dir,
                                             lines.append)
  assert not lines and estimator.held_out == held
  path, dataset = estimators.regressor_entry(config.regressor, data_dir, cache_dir)
  assert os.path.basename(path) in cached
  config.regressor.seed = 1
  assert estimators.regressor_entry(config.regressor, data_dir, cache_dir)[0] != path
  other = dict(dataset, splits=dict(dataset['splits'], train=[1, [1]]))
  assert cache.entry('pose_expression', config.regressor.to_dict(), other, cache_dir) != path


def test_recognizer_is_built_once(tiny_synthetic, tmp_path, monkeypatch):
  """independent_recognizer trains through fsjax.identity.trainer (stubbed here: its real
  training is tests/test_arcface_train.py) into a complete cache entry, then reuses it."""
  from fsjax.eval import estimators  # pylint: disable=g-import-not-at-top
  from fsjax.identity import trainer  # pylint: disable=g-import-not-at-top
  data_dir, names = tiny_synthetic
  config = _estimators_config(_tiny_estimators(names)).recognizer
  calls = []

  def fake_train(run_config, workdir, identity_dir=None, **kwargs):
    del kwargs
    calls.append((run_config.dataset.data_dir, workdir, identity_dir))
    assert '.partial-' in identity_dir  # written where a crash leaves nothing "finished"
    os.makedirs(workdir, exist_ok=True)
    _random_recognizer(identity_dir)
    return {'identity_dir': identity_dir, 'eval': {'accuracy': 0.5, 'far': 1e-3,
                                                   'tar_at_far': 0.0, 'num_pairs': 20}}

  monkeypatch.setattr(trainer, 'train_and_evaluate', fake_train)
  cache_dir = str(tmp_path / 'cache')
  lines = []
  first = estimators.independent_recognizer(config, data_dir, cache_dir, lines.append)
  assert os.path.isfile(os.path.join(first, 'identity.json'))
  assert calls[0][0] == data_dir and not os.path.exists(calls[0][1])  # run dir cleaned up
  assert any('building the independent recognizer' in line for line in lines)
  assert estimators.independent_recognizer(config, data_dir, cache_dir, lines.append) == first
  assert len(calls) == 1
  assert sorted(os.listdir(os.path.join(cache_dir, 'eval'))) == [
      os.path.basename(os.path.dirname(first))]


def test_bad_input_is_one_line_cli(tmp_path, tmp_path_factory):
  out = tmp_path / 'out'
  proc = swap_helpers.run_cli(['eval', '--protocol', 'faceforensics', '--data',
                               str(tmp_path / 'nowhere'), '--swaps', str(tmp_path),
                               '--output', str(out)], swap_helpers.cli_env(tmp_path_factory))
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith('fsjax eval: error: FaceForensics++ folder not found')
  assert 'Traceback' not in proc.stderr and not out.exists()
  proc = swap_helpers.run_cli(['eval', '--checkpoint', str(tmp_path), '--estimators.nope=1'],
                              swap_helpers.cli_env(tmp_path_factory))
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith('fsjax eval: error: ')
  assert 'estimators.nope' in proc.stderr


def _fails(match, **kwargs):
  with pytest.raises(errors.EvalInputError, match=match):
    run.run_evaluation(progress=False, log=lambda s: None, **kwargs)


def test_bad_inputs(ffpp, tmp_path):
  out = str(tmp_path / 'out')
  swaps = ffpp['swaps']
  # Wrong layout: no originals, or other compressions only.
  (tmp_path / 'flat').mkdir()
  _fails('expected the FF\\+\\+ layout', data=str(tmp_path / 'flat'), swaps=swaps,
         output_dir=out)
  _fails('it has c23 \\(pass --compression\\)', data=ffpp['root'], compression='c40',
         swaps=swaps, output_dir=out)
  # Split files: missing, empty, malformed.
  root = tmp_path / 'ff'
  shutil.copytree(os.path.join(ffpp['root'], 'original_sequences'),
                  root / 'original_sequences')
  (root / 'splits').mkdir()
  _fails('split file not found', data=str(root), swaps=swaps, output_dir=out)
  (root / 'splits' / 'test.json').write_text('[]')
  _fails('empty split', data=str(root), swaps=swaps, output_dir=out)
  (root / 'splits' / 'test.json').write_text('{"a": 1}')
  _fails('not a list of \\[a, b\\]', data=str(root), swaps=swaps, output_dir=out)
  # Sources of swaps: none, both, a missing folder; a CSV that is empty.
  _fails('needs --checkpoint .* or --swaps', data=ffpp['root'], output_dir=out)
  _fails('--swaps folder not found', data=ffpp['root'], swaps=str(tmp_path / 'no'),
         output_dir=out)
  (tmp_path / 'empty.csv').write_text('source,target\n')
  _fails('no \\(source, target\\) rows', pairs=str(tmp_path / 'empty.csv'), swaps=swaps,
         output_dir=out)
  _fails('give --checkpoint', output_dir=out)
  _fails('--frames must be >= 1', data=ffpp['root'], swaps=swaps, frames=0, output_dir=out)
  assert not os.path.exists(out)


def test_sampling_and_media_errors(tmp_path):
  assert media.sample_indices(300, 10) == [15, 45, 75, 105, 135, 165, 195, 225, 255, 285]
  assert media.sample_indices(3, 10) == [0, 1, 2] and media.sample_indices(0, 10) == []
  with pytest.raises(media.MediaError) as e:
    media.probe(str(tmp_path / 'none.mp4'))
  assert e.value.reason == media.MISSING
  (tmp_path / 'bad.mp4').write_bytes(b'garbage')
  with pytest.raises(media.MediaError) as e:
    media.probe(str(tmp_path / 'bad.mp4'))
  assert e.value.reason == media.UNREADABLE
  (tmp_path / 'bad.png').write_bytes(b'garbage')
  with pytest.raises(media.MediaError) as e:
    media.probe(str(tmp_path / 'bad.png'))
  assert e.value.reason == media.UNREADABLE


def test_outputs_are_never_half_written(tmp_path):
  out = tmp_path / 'out'
  with pytest.raises(TypeError):  # an unserialisable value fails mid-write
    report.write_outputs(str(out), {'x': object()})
  assert not out.exists() and not list(tmp_path.iterdir())
  report.write_outputs(str(out), {'x': float('nan'), 'y': np.float32(2.0)},
                       np.zeros((4, 4, 3), np.uint8))
  assert json.loads((out / 'eval.json').read_text()) == {'x': None, 'y': 2.0}
  (out / 'keep.txt').write_text('mine')
  report.write_outputs(str(out), {'x': 1})  # into an existing folder: files replaced
  assert (out / 'keep.txt').read_text() == 'mine' and not (out / 'eval_grid.png').exists()
  assert sorted(os.listdir(tmp_path)) == ['out']


def test_split_names_swaps_target_source(ffpp):
  jobs, identities = faceforensics.make_jobs(ffpp['root'], swaps_dir=ffpp['swaps'])
  assert [j.name for j in jobs] == ['000_001', '001_000', '000_002', '002_000', '003_001',
                                    '001_003']
  assert jobs[0].target == '000' and jobs[0].source == '001'
  assert jobs[0].swap.endswith(os.path.join('swaps', '000_001.mp4'))
  assert identities['003'].endswith(os.path.join('c23', 'videos', '003.mp4'))
