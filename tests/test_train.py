"""AEI-Net training: the step (train_lib), the loop (trainer), resume, preemption, multi-host.

All on configs/tiny.py shrunk to 16 px ('micro', train_helpers.MICRO: the machinery, not
the model, is under test) at batch 1 per device with a random identity encoder. The
compiled programs are shared through a persistent JAX compilation cache (one per
test session; FSJAX_TEST_JAX_CACHE=DIR keeps it between sessions), so the subprocess
runs reuse what the in-process run compiled.

  1. 3+ steps of the real loop: losses finite, params change, checkpoints, samples, TB.
  2. The step on 4 devices == the step on 1 device with the same global batch.
  3. SIGKILL after a checkpoint + restart == an uninterrupted run, bit for bit.
  4. SIGTERM / Ctrl-C mid-run (real TFDS data): checkpoint of the current step, exit code
     0 / 130; a second run on the same workdir meanwhile is refused (locked), exit code 2.
  5. Two processes (jax.distributed over loopback, gloo, 2 CPU devices each).
  6. A batch with NaN pixels is skipped and counted; the next step trains.
"""

import glob
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import train_helpers
from fsjax.aei import train_lib
from fsjax.aei import trainer
from fsjax.identity import resolve
from fsjax.train import checkpointing
from fsjax.train import loop
from fsjax.train import parallel

REF_STEPS = 4
GRAD_RTOL = 1e-3  # |grad(4 devices) - grad(1 device)| / |grad|: see the sharded-step test
HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train_helpers.py')


# ----------------------------------------------------------------------------
# Fixtures.


def _env(jax_cache):
  env = dict(os.environ)
  env.update(JAX_COMPILATION_CACHE_DIR=jax_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', JAX_PLATFORMS='cpu',
             PYTHONUNBUFFERED='1')
  return env


@pytest.fixture(scope='module')
def reference_run(jax_cache, tmp_path_factory):
  """An uninterrupted in-process run of REF_STEPS steps (checkpoints every 2, samples every 2)."""
  workdir = str(tmp_path_factory.mktemp('reference_run'))
  config = train_helpers.test_config(steps=REF_STEPS, checkpoint_every=2, sample_every=2)
  start = time.time()
  state = trainer.train_and_evaluate(config, workdir,
                                     data_source=train_helpers.fake_source(size=config.image_size))
  seconds = time.time() - start
  return {'workdir': workdir, 'config': config, 'state': state, 'seconds': seconds,
          'digest': train_helpers.state_digest(state)}


# ----------------------------------------------------------------------------
# 1. The loop.


def test_loop_trains_checkpoints_and_logs(reference_run):
  state, workdir, config = reference_run['state'], reference_run['workdir'], reference_run['config']
  print(f'reference run of {REF_STEPS} steps (with compilation): {reference_run["seconds"]:.1f} s')
  host = loop.to_host(state)
  assert int(host.step) == REF_STEPS
  assert int(host.nonfinite_total) == 0

  # Parameters moved away from the initialisation (same seed -> same init).
  models = train_lib.build_models(config, trainer.setup_identity(config, workdir).module)
  g_tx, d_tx = train_lib.make_optimizers(config)
  init = loop.to_host(trainer.init_state(config, parallel.make_mesh(), models, g_tx, d_tx))
  # Every kernel moved; biases may not: a bias right before an instance norm (D's normalised
  # convs) gets an exactly zero gradient.
  for name in ('g_params', 'd_params', 'ema_params'):
    before = jax.tree_util.tree_leaves_with_path(getattr(init, name))
    after = jax.tree.leaves(getattr(host, name))
    same = [jax.tree_util.keystr(path) for (path, a), b in zip(before, after)
            if np.array_equal(a, b)]
    assert not [p for p in same if 'kernel' in p], (name, same)
    assert len(same) <= 0.25 * len(before), (name, same)
  for a, b in zip(jax.tree.leaves(host.g_params), jax.tree.leaves(host.ema_params)):
    assert not np.array_equal(a, b) or np.all(a == 0)

  # Every loss was finite at every step (TensorBoard scalars).
  scalars = train_helpers.read_scalars(os.path.join(workdir, 'tensorboard'))
  for tag in ('train/g_loss', 'train/g_adv', 'train/g_att', 'train/g_id', 'train/g_rec',
              'train/d_loss', 'train/g_grad_norm', 'train/d_grad_norm'):
    assert sorted(scalars[tag]) == list(range(1, REF_STEPS + 1)), tag
    assert all(np.isfinite(v) for v in scalars[tag].values()), (tag, scalars[tag])
  assert 'perf/images_per_sec' in scalars and 'perf/step_time_ms' in scalars

  # Checkpoints (state + data iterator + config), sample grids.
  ckpt = checkpointing.Checkpointer(workdir)
  assert ckpt.all_steps() == [2, 4]
  assert glob.glob(os.path.join(workdir, 'checkpoints', '4', 'data_iter', 'process_0-of-1.json'))
  saved = ckpt.restore_config(4)
  assert saved['model']['attr_channels'] == list(config.model.attr_channels)
  ckpt.close()
  samples = sorted(os.listdir(os.path.join(workdir, 'samples')))
  assert samples == ['samples_00000002.png', 'samples_00000004.png']
  from PIL import Image  # pylint: disable=g-import-not-at-top
  grid = np.asarray(Image.open(os.path.join(workdir, 'samples', samples[-1])))
  cell = config.image_size + 2
  assert grid.shape == (8 * cell + 2, 4 * cell + 2, 3)


def test_refuses_to_start_without_identity_encoder(tmp_path):
  config = train_helpers.test_config()
  config.identity.allow_random = False
  with pytest.raises(resolve.IdentityCheckpointError, match='fsjax convert-arcface'):
    trainer.train_and_evaluate(config, str(tmp_path), data_source=train_helpers.fake_source())
  config.identity.checkpoint = str(tmp_path)  # not an identity checkpoint
  with pytest.raises(resolve.IdentityCheckpointError, match='identity.json'):
    trainer.train_and_evaluate(config, str(tmp_path), data_source=train_helpers.fake_source())
  # A config that trains its own encoder (configs/synthetic.py) reuses the one already
  # in WORKDIR/identity instead of training again.
  config.identity.checkpoint = ''
  config.identity.auto_train = 'configs/arcface_synthetic.py'
  (tmp_path / 'identity').mkdir()
  (tmp_path / 'identity' / 'identity.json').write_text('{}')
  assert resolve.checkpoint_dir(config, str(tmp_path)) == str(tmp_path / 'identity')


def test_alignment_must_match_crop_mode():
  config = train_helpers.test_config()
  config.dataset.alignment = 'arcface'
  with pytest.raises(ValueError, match='crop_19_237'):
    trainer.check_config(config)
  config.identity.crop_mode = 'crop_19_237'
  trainer.check_config(config)


# ----------------------------------------------------------------------------
# 2. and 6. The step itself.


@pytest.fixture(scope='module')
def step_setup(jax_cache):
  """SGD(1.0) steps on 4 devices and on 1 device, a start state and a float batch."""
  del jax_cache
  config = train_helpers.test_config()
  found = trainer.setup_identity(config, '')
  identity, id_vars = found.module, found.variables
  models = train_lib.build_models(config, identity)
  # SGD with lr 1: new params = params - grad, so params compare gradients directly
  # (Adam with b1 = 0 would blow float noise in ~0 gradients up to +-lr).
  g_tx = d_tx = optax.sgd(1.0)
  mesh4 = parallel.make_mesh()
  mesh1 = parallel.make_mesh(jax.devices()[:1])
  state = loop.to_host(trainer.init_state(config, mesh4, models, g_tx, d_tx))
  rs = np.random.RandomState(1)
  s = config.image_size
  batch = {'source': rs.uniform(-1, 1, (4, s, s, 3)).astype(np.float32),
           'target': rs.uniform(-1, 1, (4, s, s, 3)).astype(np.float32),
           'same': np.array([1, 0, 0, 1], np.float32)}
  batch['target'][0] = batch['source'][0]
  batch['target'][3] = batch['source'][3]
  steps = {n: train_lib.make_train_step(config, mesh, models, g_tx, d_tx, donate=False)
           for n, mesh in ((4, mesh4), (1, mesh1))}
  return dict(config=config, models=models, id_vars=id_vars, state=state, batch=batch,
              steps=steps, meshes={4: mesh4, 1: mesh1})


def _run(setup, n, state, batch):
  mesh = setup['meshes'][n]
  state = parallel.replicate(state, mesh)
  id_vars = parallel.replicate(setup['id_vars'], mesh)
  new_state, metrics = setup['steps'][n](state, parallel.shard_batch(batch, mesh), id_vars)
  return loop.to_host(new_state), loop.metrics_to_host(metrics)


def _distance(xs, ys):
  return float(np.sqrt(sum(np.sum((np.asarray(x, np.float64) - y) ** 2) for x, y in zip(xs, ys))))


def test_sharded_step_equals_single_device_step(step_setup):
  state4, m4 = _run(step_setup, 4, step_setup['state'], step_setup['batch'])
  state1, m1 = _run(step_setup, 1, step_setup['state'], step_setup['batch'])
  for k in m1:
    # Gradient norms carry the gradients' float32 rounding (GRAD_RTOL, below).
    rtol = GRAD_RTOL if k.endswith('_grad_norm') else 1e-5
    np.testing.assert_allclose(m4[k], m1[k], rtol=rtol, atol=1e-6, err_msg=k)
  assert m1['same_fraction'] == 0.5 and m1['g_rec'] > 0 and m1['skipped'] == 0
  start = step_setup['state']
  # Statistics and the EMA: elementwise.
  for name in ('g_batch_stats', 'd_batch_stats', 'ema_params'):
    for a, b in zip(jax.tree.leaves(getattr(state4, name)), jax.tree.leaves(getattr(state1, name))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
  # Parameters after SGD(1.0) = params - grads, so they compare the gradients: they agree
  # to float32 rounding through ~30 layers (batch 1 vs 4 per conv changes XLA's
  # accumulation order everywhere): measured |g4 - g1| / |g| = 1.6e-4 (G) on the 16 px micro
  # model, whose instance norms over 2x2 maps amplify rounding (1.4e-5 G, 3.6e-6 D on the
  # 64 px tiny model). Anything unsynchronised (batch-norm statistics, a per-device mean)
  # would be O(1e-2+).
  rel, worst = {}, {}
  for name in ('g_params', 'd_params'):
    before, four, one = (jax.tree.leaves(getattr(st, name)) for st in (start, state4, state1))
    norm = _distance(before, one)
    np.testing.assert_allclose(norm, m1[name[0] + '_grad_norm'], rtol=1e-4)
    rel[name] = _distance(four, one) / norm
    worst[name] = max(float(np.max(np.abs(a - b))) for a, b in zip(four, one))
    assert rel[name] < GRAD_RTOL, (name, rel)
  print('|grad(4 devices) - grad(1 device)| / |grad|:', rel, '; max elementwise:', worst)
  # The batch statistics really moved (so their equality means something).
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(start.g_batch_stats),
                                                   jax.tree.leaves(state1.g_batch_stats)))


def test_nan_batch_is_skipped_and_counted(step_setup):
  start = step_setup['state']
  bad = dict(step_setup['batch'])
  bad['source'] = bad['source'].copy()
  bad['source'][2, 5:9, 5:9, :] = np.nan
  skipped, m = _run(step_setup, 1, start, bad)
  assert m['skipped'] == 1.0
  assert int(skipped.step) == 1 and int(skipped.nonfinite_count) == 1
  assert int(skipped.nonfinite_total) == 1
  for name in ('g_params', 'g_batch_stats', 'd_params', 'g_opt_state', 'ema_params'):
    for a, b in zip(jax.tree.leaves(getattr(start, name)), jax.tree.leaves(getattr(skipped, name))):
      np.testing.assert_array_equal(a, b, err_msg=name)
  # Training continues: the next good batch is applied and resets the streak.
  trained, m = _run(step_setup, 1, skipped, step_setup['batch'])
  assert m['skipped'] == 0.0 and np.isfinite(m['g_loss'])
  assert int(trained.step) == 2 and int(trained.nonfinite_count) == 0
  assert int(trained.nonfinite_total) == 1
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(skipped.g_params),
                                                      jax.tree.leaves(trained.g_params)))


def test_loop_stops_after_consecutive_nonfinite_steps(step_setup):
  host = step_setup['state'].replace(nonfinite_count=np.int32(5))
  with pytest.raises(loop.NonFiniteError, match='max_nonfinite_steps=5'):
    loop.check_nonfinite(host, 5, 10, trainer.NONFINITE_ADVICE)
  loop.check_nonfinite(host, 6, 10, trainer.NONFINITE_ADVICE)


# ----------------------------------------------------------------------------
# 3., 4., 5. Subprocess runs of the real loop.


def _start(args, jax_cache, log_path, xla_flags=()):
  log = open(log_path, 'w')  # pylint: disable=consider-using-with
  env = _env(jax_cache)
  env['XLA_FLAGS'] = ' '.join([env.get('XLA_FLAGS', ''), *xla_flags]).strip()
  proc = subprocess.Popen([sys.executable, HELPER] + [str(a) for a in args], stdout=log,
                          stderr=subprocess.STDOUT, env=env,
                          cwd=os.path.dirname(os.path.dirname(HELPER)))
  proc.log_path = log_path
  return proc


def _text(proc):
  with open(proc.log_path) as f:
    return f.read()


def _wait_for(proc, predicate, timeout, what):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if proc.poll() is not None:
      raise AssertionError(
          f'worker exited ({proc.returncode}) before {what}:\n{_text(proc)[-3000:]}')
    time.sleep(0.05)
  proc.kill()
  raise AssertionError(f'timed out waiting for {what}:\n{_text(proc)[-3000:]}')


def _finish(proc, timeout=300):
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  text = _text(proc)
  assert proc.returncode == 0, text[-3000:]
  match = re.search(r'PARAMS_DIGEST (\w+) STEP (\d+) PROCESS (\d+)', text)
  assert match, text[-3000:]
  return match.group(1), int(match.group(2)), text


def test_sigkill_then_resume_is_bit_identical(reference_run, jax_cache, tmp_path):
  workdir = tmp_path / 'killed'
  ckpt_dir = workdir / 'checkpoints'
  proc = _start(['--workdir', workdir, '--steps', 100, '--checkpoint_every', 1], jax_cache,
                tmp_path / 'run1.log')

  def has_checkpoint():
    return ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())

  _wait_for(proc, has_checkpoint, 600, 'a first checkpoint')
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  assert killed_at < REF_STEPS, 'the run got past the reference length before the kill'

  restart = _start(['--workdir', workdir, '--steps', REF_STEPS, '--checkpoint_every', 2],
                   jax_cache, tmp_path / 'run2.log')
  digest, step, text = _finish(restart)
  resumed = re.search(r'RESUMED (\d+)', text)
  assert resumed and 1 <= int(resumed.group(1)) < REF_STEPS, text[-2000:]
  assert step == REF_STEPS
  assert digest == reference_run['digest']


def _build_tiny_synthetic(data_dir, size):
  """synthetic_faces at `size` px with 6 train identities x 2 images, as a custom config."""
  from fsjax.data import build  # pylint: disable=g-import-not-at-top
  from tfds_builders import synthetic_faces  # pylint: disable=g-import-not-at-top
  config = synthetic_faces.SyntheticFacesConfig(
      name=f'trainer{size}', size=size, train_identities=6, test_identities=2,
      images_per_identity=2, train_pairs=0, test_pairs=0, batch_size=12, num_workers=1)
  build.build_dataset('synthetic_faces', str(data_dir), config=config, verbose=False)
  return f'synthetic_faces/trainer{size}'


@pytest.mark.parametrize('signum,exit_code', [(signal.SIGTERM, 0), (signal.SIGINT, 130)],
                         ids=['SIGTERM', 'SIGINT'])
def test_sigterm_saves_current_step_and_exits_zero(jax_cache, tmp_path, signum, exit_code):
  """The real command (`fsjax train`, config flags) on a real TFDS dataset, preempted
  (SIGTERM: exit 0) or interrupted (Ctrl-C: exit 130); while it runs, its workdir is locked."""
  data_dir = tmp_path / 'tfds'
  name = _build_tiny_synthetic(data_dir, train_helpers.MICRO['image_size'])
  workdir = tmp_path / 'preempted'
  overrides = {'identity.allow_random': True, 'dataset.name': name, 'dataset.data_dir': data_dir,
               'dataset.num_workers': 0, 'per_device_batch_size': 1, 'num_train_steps': 1000,
               'log_every_steps': 1, 'checkpoint_every_steps': 10000, 'sample_every_steps': 0}
  command = ([sys.executable, '-m', 'fsjax.main', 'train', '--config', 'configs/tiny.py',
              '--workdir', str(workdir)] + train_helpers.micro_flags()
             + [f'--config.{k}={v}' for k, v in overrides.items()])
  log_path = tmp_path / 'cli.log'
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_env(jax_cache),
                            cwd=os.path.dirname(os.path.dirname(HELPER)))
  proc.log_path = log_path
  _wait_for(proc, lambda: re.search(r'step [2-9]/1000', _text(proc)), 600, 'step 2')
  if signum == signal.SIGINT:  # (one second run is enough for the lock)
    second = subprocess.run(command, capture_output=True, text=True, env=_env(jax_cache),
                            cwd=os.path.dirname(os.path.dirname(HELPER)), timeout=300)
    assert second.returncode == 2, second.stderr[-3000:]
    assert second.stderr.strip().splitlines() == [
        f'fsjax train: error: workdir {workdir} is in use by PID {proc.pid} on '
        f'{socket.gethostname()}'], second.stderr[-3000:]
  proc.send_signal(signum)
  try:
    proc.wait(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
  text = _text(proc)
  assert proc.returncode == exit_code, text[-3000:]
  match = re.search(signum.name + r': saving a checkpoint of step (\d+)', text)
  assert match, text[-3000:]
  if signum == signal.SIGINT:
    assert text.strip().splitlines()[-1] == (
        f'fsjax train: interrupted (Ctrl-C: saved a checkpoint of step {match.group(1)}); run '
        'the same command to resume from the last checkpoint'), text[-2000:]
  assert not os.path.exists(workdir / 'fsjax.lock')  # released
  step = int(match.group(1))
  last_logged = max(int(m) for m in re.findall(r'step (\d+)/1000', text))
  assert step >= 2 and step == last_logged  # the step it was at, not an older one
  ckpt = checkpointing.Checkpointer(str(workdir))
  assert ckpt.all_steps() == [step]  # only the preemption checkpoint (no periodic ones)
  assert ckpt.restore_config(step)['dataset']['name'] == name
  ckpt.close()


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_in_lockstep(jax_cache, tmp_path):
  port = _free_port()
  args = ['--workdir', tmp_path / 'run', '--steps', 2, '--checkpoint_every', 2, '--devices', 2,
          '--coordinator', f'127.0.0.1:{port}', '--num_processes', 2]
  # Both processes compile their own program at once (no cache to share): XLA's quickest
  # backend optimisation level about halves that; the program's collectives are the same.
  procs = [_start(args + ['--process_id', i], jax_cache, tmp_path / f'proc{i}.log',
                  xla_flags=['--xla_backend_optimization_level=0'])
           for i in range(2)]
  results = [_finish(p, timeout=900) for p in procs]
  assert [r[1] for r in results] == [2, 2]
  assert results[0][0] == results[1][0], 'processes hold different parameters'
  assert os.path.isfile(tmp_path / 'run' / 'checkpoints' / '2' / 'data_iter' /
                        'process_1-of-2.json')


def test_bfloat16_step_traces_with_float32_state():
  """config.model.dtype='bfloat16': the step traces (shapes only, no compile) and keeps fp32."""
  config = train_helpers.test_config()
  config.model.dtype = 'bfloat16'
  identity = resolve.random_encoder(config, config.model.dtype).module
  id_vars = jax.eval_shape(identity.init, jax.random.PRNGKey(0), jnp.zeros((1, 112, 112, 3)))
  models = train_lib.build_models(config, identity)
  g_tx, d_tx = train_lib.make_optimizers(config)
  mesh = parallel.make_mesh()
  state = trainer.abstract_state(config, mesh, models, g_tx, d_tx)
  s = config.image_size
  batch = {'source': jax.ShapeDtypeStruct((4, s, s, 3), np.uint8),
           'target': jax.ShapeDtypeStruct((4, s, s, 3), np.uint8),
           'same': jax.ShapeDtypeStruct((4,), np.float32)}
  step = train_lib.make_train_step(config, mesh, models, g_tx, d_tx)
  new_state, metrics = jax.eval_shape(step, state, batch, id_vars)
  assert {x.dtype for x in jax.tree.leaves(new_state.g_params)} == {np.dtype('float32')}
  assert metrics.g_loss.total.dtype == np.float32
  assert models.generator.dtype == 'bfloat16' and models.identity.dtype == jnp.bfloat16
