"""Training infrastructure shared by the AEI and ArcFace trainers: parallel, checkpointing,
metric_logging (4 fake CPU devices; no model is compiled here)."""

import glob
import logging
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

import train_helpers
from fsjax.train import checkpointing
from fsjax.train import metric_logging
from fsjax.train import parallel


# ----------------------------------------------------------------------------
# parallel


def test_shard_batch_replicate_and_data_parallel():
  mesh = parallel.make_mesh()
  assert mesh.devices.size == 4 and mesh.axis_names == ('data',)
  host = {'x': np.arange(8 * 3, dtype=np.float32).reshape(8, 3), 'y': np.arange(8)}
  batch = parallel.shard_batch(host, mesh)
  assert batch['x'].shape == (8, 3) and batch['x'].sharding.spec == P('data')
  assert [s.data.shape for s in batch['x'].addressable_shards] == [(2, 3)] * 4
  w = parallel.replicate({'w': np.float32(2.0)}, mesh)
  assert w['w'].sharding.spec == P()

  def per_device(w, b):
    local = jnp.sum(b['x'] * w['w'])
    return lax.psum(local, 'data'), lax.pmean(jnp.mean(b['x']), 'data'), b['y'] + 1

  fn = parallel.data_parallel(per_device, mesh, in_specs=(P(), P('data')),
                              out_specs=(P(), P(), P('data')))
  total, mean, y = fn(w, batch)
  assert float(total) == pytest.approx(2.0 * host['x'].sum())
  assert float(mean) == pytest.approx(host['x'].mean())
  np.testing.assert_array_equal(np.asarray(y), host['y'] + 1)
  with pytest.raises(ValueError, match='does not split'):
    parallel.shard_batch({'x': np.zeros((6, 1))}, mesh)


def test_initialize_distributed_flag_checks():
  assert parallel.initialize_distributed() is False  # single process, nothing to detect
  with pytest.raises(ValueError, match='num_processes'):
    parallel.initialize_distributed('127.0.0.1:1234')
  with pytest.raises(ValueError, match='coordinator'):
    parallel.initialize_distributed('', num_processes=2, process_id=0)
  parallel.barrier('single_process_noop')


# ----------------------------------------------------------------------------
# checkpointing


def _iterator():
  return iter(grain.MapDataset.range(100).shuffle(seed=3).batch(4).to_iter_dataset())


def _save_three(workdir, mesh):
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=5)
  it = _iterator()
  state = parallel.replicate({'w': np.zeros(1000, np.float32), 'n': np.int32(0), 'empty': {}},
                             mesh)
  for step in (1, 2, 3):
    next(it)
    state = jax.tree.map(lambda x: x + 1, state)
    ckpt.save(step, state, it, {'step': step, 'name': 'x'})
  ckpt.close()
  return state


def _abstract(mesh):
  return checkpointing.abstract_like(
      {'w': jax.ShapeDtypeStruct((1000,), jnp.float32), 'n': jax.ShapeDtypeStruct((), jnp.int32),
       'empty': {}}, parallel.replicated_sharding(mesh))


def test_checkpoint_roundtrip_onto_fewer_devices(tmp_path):
  _save_three(str(tmp_path), parallel.make_mesh())
  mesh2 = parallel.make_mesh(jax.devices()[:2])  # restore onto another device count
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  it = _iterator()
  step, state = ckpt.restore_latest(_abstract(mesh2), it)
  assert step == 3 and int(state['n']) == 3 and float(state['w'][0]) == 3.0
  assert state['w'].sharding.mesh.devices.size == 2
  expected = _iterator()
  for _ in range(4):
    want = next(expected)
  np.testing.assert_array_equal(next(it), want)  # the iterator continues after batch 3
  assert ckpt.restore_config(3) == {'step': 3, 'name': 'x'}
  assert os.path.isfile(tmp_path / 'checkpoints' / '3' / 'data_iter' / 'process_0-of-1.json')
  ckpt.close()


# A failed tensorstore read leaves a callback that fires after its asyncio loop closed
# ("Event loop is closed", printed, harmless): not this test's concern.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('damage', ['truncate_data', 'truncate_everything', 'delete_arrays'])
def test_unreadable_latest_checkpoint_falls_back(tmp_path, caplog, damage):
  mesh = parallel.make_mesh()
  _save_three(str(tmp_path), mesh)
  state_dir = tmp_path / 'checkpoints' / '3' / 'state'
  files = [f for f in glob.glob(str(state_dir / '**'), recursive=True) if os.path.isfile(f)]
  for f in files:
    if damage == 'truncate_everything' or (damage == 'truncate_data' and '/d/' in f):
      with open(f, 'r+b') as fh:
        fh.truncate(os.path.getsize(f) // 2)
    elif damage == 'delete_arrays' and ('/d/' in f or 'ocdbt' in f):
      os.remove(f)
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  it = _iterator()
  with caplog.at_level(logging.WARNING):
    step, state = ckpt.restore_latest(_abstract(mesh), it)
  assert step == 2 and int(state['n']) == 2 and float(state['w'][-1]) == 2.0
  assert 'checkpoint of step 3' in caplog.text and 'unreadable' in caplog.text
  expected = _iterator()
  for _ in range(3):
    want = next(expected)
  np.testing.assert_array_equal(next(it), want)  # positioned after batch 2
  # The unreadable step is set aside, so training can save step 3 again.
  assert ckpt.all_steps() == [1, 2]
  assert os.path.isdir(tmp_path / 'checkpoints_unreadable' / '3')
  assert ckpt.save(3, state, it)
  ckpt.wait()
  assert ckpt.all_steps() == [1, 2, 3]
  ckpt.close()


def test_incompatible_target_raises_and_moves_nothing(tmp_path):
  mesh = parallel.make_mesh()
  _save_three(str(tmp_path), mesh)
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  wrong = checkpointing.abstract_like({'w': jax.ShapeDtypeStruct((7,), jnp.float32)},
                                      parallel.replicated_sharding(mesh))
  with pytest.raises(RuntimeError, match='none of the checkpoints'):
    ckpt.restore_latest(wrong)
  assert ckpt.all_steps() == [1, 2, 3]
  assert not os.path.exists(tmp_path / 'checkpoints_unreadable')
  ckpt.close()
  assert checkpointing.Checkpointer(str(tmp_path / 'empty')).restore_latest(wrong) is None


# ----------------------------------------------------------------------------
# metric_logging


def test_image_grid_png_and_tensorboard(tmp_path):
  a = np.zeros((3, 8, 8, 3), np.uint8)
  b = np.full((3, 8, 8, 3), 1.0, np.float32)  # [-1, 1] floats -> 255
  grid = metric_logging.image_grid([a, b], pad=2)
  assert grid.shape == (3 * 10 + 2, 2 * 10 + 2, 3) and grid.dtype == np.uint8
  assert np.all(grid[2:10, 2:10] == 0) and np.all(grid[2:10, 12:20] == 255)
  writer = metric_logging.MetricWriter(str(tmp_path / 'tb'))
  path = metric_logging.save_sample_grid(str(tmp_path), 7, [a, b], writer)
  writer.write_scalars(7, {'train/loss': 1.5})
  writer.close()
  assert path.endswith(os.path.join('samples', 'samples_00000007.png')) and os.path.isfile(path)
  assert train_helpers.read_scalars(str(tmp_path / 'tb')) == {'train/loss': {7: 1.5}}


def test_progress_line_has_rate_eta_and_losses():
  lines = []
  progress = metric_logging.Progress(100, 0, global_batch=8, printer=lines.append)
  timing = progress.update(10, {'g_loss': 3.0, 'd_loss': 1.0, 'g_id': 0.5})
  assert timing['images_per_sec'] == pytest.approx(timing['steps_per_sec'] * 8)
  assert 'step 10/100 (10.0%)' in lines[0] and 'ETA' in lines[0]
  assert 'G=3' in lines[0] and 'id=0.5' in lines[0] and 'D=1' in lines[0]


def test_parameter_overview_counts():
  text = metric_logging.log_parameter_overview('x', {'a': {'k': np.ones((3, 4), np.float32)}})
  assert 'a/k' in text and '(3, 4)' in text
  assert metric_logging.count_params({'a': np.ones((3, 4)), 'b': np.ones(5)}) == 17
