"""Never lose a user's files (issue #21): outputs that overlap inputs are refused, output
folders are atomic and replace only earlier outputs of their kind, workdirs are locked,
Ctrl-C checkpoints, directory symlinks are not followed, one pixel cap, and every bad input
gets one line and exit code 2 with nothing written.

The command-line cases run in one driver process (tests/cli_helpers.py: heavy imports once,
one forked child per command line); the rest in-process.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

import cli_helpers
import swap_helpers
from fsjax import main
from fsjax.data import image_io
from fsjax.data import paths
from fsjax.swap import export
from fsjax.train import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, 'configs', 'tiny.py')


def _huge_png(width: int = 12000, height: int = 12000) -> bytes:
  """A valid PNG header claiming width x height with two rows of data: tiny on disk, and
  gigabytes if anything decoded it."""

  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))

  ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  rows = zlib.compress(b'\x00' * (1 + 3 * width) * 2)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', rows)
          + chunk(b'IEND', b''))


def _snapshot(root) -> dict:
  """{relative path: (kind, size, mtime, sha256)} of everything under root."""
  out = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(folder, name)
      rel = os.path.relpath(path, root)
      st = os.lstat(path)
      digest = ''
      if os.path.isfile(path) and not os.path.islink(path):
        with open(path, 'rb') as f:
          digest = hashlib.sha256(f.read()).hexdigest()
      out[rel] = (os.path.isdir(path), st.st_size, st.st_mtime_ns if not os.path.isdir(path)
                  else 0, digest)
  return out


# ---------------------------------------------------------------------------- paths


def test_outputs_never_overlap_inputs_and_replace_only_their_kind(tmp_path):
  (tmp_path / 'run' / 'checkpoints').mkdir(parents=True)
  (tmp_path / 'notes').mkdir()
  (tmp_path / 'notes' / 'n.txt').write_text('mine')
  (tmp_path / 'old_export').mkdir()
  (tmp_path / 'old_export' / 'swapper.json').write_text('{}')
  os.symlink(tmp_path / 'run', tmp_path / 'link')
  run = str(tmp_path / 'run')
  assert paths.overlap(run, [run]) == (run, 'is')
  assert paths.overlap(str(tmp_path), [run]) == (run, 'contains')
  assert paths.overlap(run + '/export', [run]) == (run, 'lies inside')
  assert paths.overlap(str(tmp_path / 'link'), [run]) == (run, 'is')  # through the symlink
  assert paths.overlap(str(tmp_path / 'runs2'), [run]) is None  # a name prefix is not inside

  def refused(output, match, **kwargs):
    kwargs = dict(dict(marker='swapper.json', kind='export', overwrite=True), **kwargs)
    with pytest.raises(paths.OutputError, match=match):
      paths.check_output_dir(str(output), [run], **kwargs)

  refused(tmp_path / 'run', 'is the input')
  refused(tmp_path, 'contains the input')
  refused(tmp_path / 'run' / 'export', 'lies inside the input')
  refused(tmp_path / 'notes', 'not an earlier export')
  refused(tmp_path / 'notes' / 'n.txt', 'not a folder')
  refused(tmp_path / 'old_export', 'output directory exists', overwrite=False)
  assert paths.check_output_dir(str(tmp_path / 'old_export'), [run], marker='swapper.json',
                                kind='export', overwrite=True) == str(tmp_path / 'old_export')
  (tmp_path / 'empty').mkdir()  # an empty folder holds nothing to lose
  paths.check_output_dir(str(tmp_path / 'empty'), [run], marker='x', kind='x', overwrite=False)

  # Atomic: a failed write leaves the old output as it was and no temporary folder.
  with pytest.raises(RuntimeError):
    with paths.atomic_dir(tmp_path / 'old_export') as tmp:
      (tmp_path / tmp / 'half').write_text('x')
      raise RuntimeError('disk died')
  assert sorted(os.listdir(tmp_path)) == ['empty', 'link', 'notes', 'old_export', 'run']
  assert os.listdir(tmp_path / 'old_export') == ['swapper.json']
  previous = os.umask(0o027)
  try:
    with paths.atomic_dir(tmp_path / 'old_export') as tmp:
      with open(os.path.join(tmp, 'new.json'), 'w') as f:
        f.write('{}')
    assert os.listdir(tmp_path / 'old_export') == ['new.json']
    # The umask decides the permissions (tempfile.mkdtemp / mkstemp force 0700 / 0600).
    assert os.stat(tmp_path / 'old_export').st_mode & 0o777 == 0o750
    assert paths.umask_mode() == 0o640
  finally:
    os.umask(previous)
  assert sorted(os.listdir(tmp_path)) == ['empty', 'link', 'notes', 'old_export', 'run']


def test_swap_outputs_follow_the_umask(tmp_path):
  from fsjax.swap import provenance  # pylint: disable=g-import-not-at-top
  previous = os.umask(0o022)
  try:
    provenance.save_image(str(tmp_path / 'out.png'), np.zeros((8, 8, 3), np.uint8))
  finally:
    os.umask(previous)
  assert os.stat(tmp_path / 'out.png').st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------- workdir lock


def test_workdir_lock_is_exclusive_released_and_taken_over_when_stale(tmp_path, caplog,
                                                                      monkeypatch):
  workdir = str(tmp_path / 'runs' / 'a')
  lock_file = os.path.join(workdir, workdir_lib.LOCK_FILE)
  host = socket.gethostname()
  with workdir_lib.acquire(workdir):
    assert json.loads(open(lock_file).read()) == {'host': host, 'pid': os.getpid()}
    with pytest.raises(workdir_lib.WorkdirInUse,
                       match=f'workdir {workdir} is in use by PID {os.getpid()} on {host}$'):
      workdir_lib.acquire(workdir)
    # Multi-host: the other processes take nothing and never wait.
    workdir_lib.acquire(workdir, chief=False).release()
  assert os.listdir(workdir) == []  # released on exit

  # A lock file left by a dead process (kill -9) on this host: taken over with a warning.
  with open(lock_file, 'w') as f:
    json.dump({'host': host, 'pid': 2 ** 22 + 12345}, f)
  with caplog.at_level(logging.WARNING):
    workdir_lib.acquire(workdir).release()
  assert 'taking over the stale lock of PID 4206649' in caplog.text
  # Another host's lock file is not taken (its run may be alive) and not removed.
  with open(lock_file, 'w') as f:
    json.dump({'host': 'elsewhere', 'pid': 7}, f)
  with pytest.raises(workdir_lib.WorkdirInUse, match='in use by PID 7 on elsewhere'):
    workdir_lib.acquire(workdir)
  assert json.load(open(lock_file))['host'] == 'elsewhere'

  # A workdir that cannot hold a run is refused before anything is created.
  (tmp_path / 'file').write_text('x')
  for bad, match in ((tmp_path / 'file', 'is a file'), (tmp_path / 'file' / 'w', 'lies under')):
    with pytest.raises(workdir_lib.WorkdirError, match=match):
      workdir_lib.acquire(str(bad))
  real_statvfs = os.statvfs

  class Stat:

    def __init__(self, flag, free):
      self.f_flag, self.f_bavail, self.f_frsize = flag, free, 1

  for flag, free, match in ((os.ST_RDONLY, 10 ** 12, 'read-only file system'),
                            (0, 1000, 'file system is full')):
    monkeypatch.setattr(os, 'statvfs', lambda path, s=Stat(flag, free): s)
    with pytest.raises(workdir_lib.WorkdirError, match=match):
      workdir_lib.acquire(str(tmp_path / 'new' / 'run'))
  monkeypatch.setattr(os, 'statvfs', real_statvfs)

  def full(*args):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(os, 'pwrite', full)
  with pytest.raises(workdir_lib.WorkdirError, match='file system is full'):
    workdir_lib.acquire(str(tmp_path / 'new' / 'run'))
  assert not (tmp_path / 'new').exists()  # the folders it made are gone again


def test_ctrl_c_checkpoints_then_interrupts_and_a_second_one_stops_at_once():
  from fsjax.train import loop  # pylint: disable=g-import-not-at-top

  class Checkpointer:
    saved = []

    def save(self, step, *unused):
      self.saved.append(step)

    def wait(self):
      pass

  before = signal.getsignal(signal.SIGINT)
  watcher = loop.PreemptionWatcher()
  try:
    ckpt = Checkpointer()
    assert not watcher.checkpoint_if_reached(1, ckpt, None, None, None)
    os.kill(os.getpid(), signal.SIGINT)  # handled: no KeyboardInterrupt yet
    time.sleep(0.01)
    assert watcher.requested and watcher.signal == 'SIGINT'
    with pytest.raises(KeyboardInterrupt, match='saved a checkpoint of step 2'):
      watcher.checkpoint_if_reached(2, ckpt, None, None, None)
    assert ckpt.saved == [2]
    with pytest.raises(KeyboardInterrupt, match='second Ctrl-C'):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1)
  finally:
    watcher.close()
  assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------------------- data


def test_build_does_not_follow_directory_symlinks(tmp_path):
  """A `loop -> ..` link used to read every photo again under another label."""
  from fsjax.data import build  # pylint: disable=g-import-not-at-top
  from tfds_builders.aligned_faces import aligned_faces_dataset_builder as af  # pylint: disable=g-import-not-at-top
  manual = tmp_path / 'manual'
  for who, n in (('alice', 2), ('bob', 1)):
    (manual / who).mkdir(parents=True)
    for i in range(n):
      Image.fromarray(np.full((40, 40, 3), 60 * i + 10, np.uint8)).save(manual / who / f'{i}.png')
  (tmp_path / 'elsewhere').mkdir()
  Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / 'elsewhere' / 'x.png')
  os.symlink('..', manual / 'loop')
  os.symlink('../alice', manual / 'bob' / 'alias')
  os.symlink(tmp_path / 'elsewhere', manual / 'outside')
  config = af.AlignedFacesConfig(name='links', description='', size=32, alignment='none',
                                 labels='folders', num_workers=1)
  builder = build.build_dataset('aligned_faces', str(tmp_path / 'tfds'), str(manual),
                                config=config, verbose=False)
  source = builder.as_data_source()['train']
  records = sorted((source[i]['source'].decode(), int(source[i]['label']))
                   for i in range(len(source)))
  assert records == [('alice/0.png', 0), ('alice/1.png', 0), ('bob/0.png', 1)]
  report = json.loads(open(os.path.join(builder.data_dir, af.REPORT_NAME)).read())
  assert report['splits']['train']['skipped'] == {af.SYMLINK_LOOP: 2, af.SYMLINK_OUTSIDE: 1}


def test_one_pixel_cap_checked_from_the_header(tmp_path, monkeypatch):
  from fsjax.faces import align_images  # pylint: disable=g-import-not-at-top
  huge = tmp_path / 'huge.png'
  huge.write_bytes(_huge_png())  # 144 Mpx in 300 bytes
  start = time.time()
  with pytest.raises(ValueError, match=r'^image too large: .*12000x12000 > 100000000 pixels.*'
                     'FSJAX_MAX_PIXELS'):
    image_io.load_rgb(huge)
  assert time.time() - start < 1.0  # nothing decoded
  small = tmp_path / 'small.png'
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(small)
  monkeypatch.setenv('FSJAX_MAX_PIXELS', '1000')  # configurable, for every command
  with pytest.raises(ValueError, match='64x64 > 1000 pixels'):
    image_io.load_rgb(small)
  monkeypatch.delenv('FSJAX_MAX_PIXELS')
  report = align_images.align_paths([str(huge)], str(tmp_path / 'out'), detector=object())
  assert [r for _, r, _ in report.failures] == [image_io.TOO_LARGE]


# ---------------------------------------------------------------------------- the CLI


def _readme_commands() -> dict:
  """{subcommand: flags} of every `fsjax SUB --flag ...` in README.md (code and tables)."""
  text = open(os.path.join(REPO, 'README.md')).read().replace('\\\n', ' ').replace('\\|', '/')
  used = {}
  for match in re.finditer(r'(?<![\w./-])fsjax ([a-z][\w-]*)([^\n`|]*)', text):
    sub, rest = match.group(1), match.group(2)
    if sub in main.COMMANDS or '--' in rest:  # not prose such as "fsjax is faster"
      used.setdefault(sub, set()).update(re.findall(r'(?<![\w-])--([A-Za-z][\w-]*)', rest))
  return used


@pytest.fixture(scope='module')
def cli(tmp_path_factory):
  """Runs the bad command lines below and `fsjax SUB --helpfull` of every subcommand the
  README names, all in one driver process; records the whole tree before and after."""
  tmp_path = tmp_path_factory.mktemp('cli')
  work = tmp_path / 'work'
  (work / 'W' / 'checkpoints' / '5').mkdir(parents=True)
  (work / 'W' / 'tensorboard').mkdir()
  (work / 'W' / 'tensorboard' / 'events.out').write_bytes(b'logs')
  (work / 'W' / 'my_notes.txt').write_text('the run and the user notes')
  (work / 'notes').mkdir()
  (work / 'notes' / 'todo.txt').write_text('not an export')
  (work / 'D').mkdir()
  (work / 'D' / 'backbone.pth').write_bytes(b'weights')
  (work / 'D' / 'readme.txt').write_text('mine')
  (work / 'photos').mkdir()
  Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(work / 'photos' / 'a.png')
  (work / 'huge.png').write_bytes(_huge_png())
  (work / 'a_file').write_text('x')
  export_dir = work / 'E'  # enough of an export for the checks that run before the model
  export_dir.mkdir()
  (export_dir / 'swapper.json').write_text(json.dumps({
      'format': 'fsjax-swapper', 'format_version': 1, 'image_size': 64, 'model': {},
      'alignment': 'ffhq', 'identity_crop_mode': 'resize', 'identity': {}}))
  busy = work / 'busy'
  tfds_dir = tmp_path / 'tfds'  # empty: nothing is prepared there

  train = ['train', '--config', TINY]
  data = [f'--config.dataset.data_dir={tfds_dir}']
  bad = {
      # name: (argv, exit code, message)
      'export into its workdir': (['export', '--workdir', 'W', '--output', 'W', '--overwrite'],
                                  2, 'is the input'),
      'export over a parent': (['export', '--workdir', 'W', '--output', '.', '--overwrite'],
                               2, 'contains the input'),
      'export inside': (['export', '--workdir', 'W', '--output', 'W/export'], 2,
                        'lies inside the input'),
      'export over notes': (['export', '--workdir', 'W', '--output', 'notes', '--overwrite'],
                            2, 'is not an earlier export (it has no swapper.json)'),
      'convert into its folder': (['convert-arcface', 'D/backbone.pth', 'D', '--overwrite'], 2,
                                  'contains the input'),
      'convert over notes': (['convert-arcface', 'D/backbone.pth', 'notes', '--overwrite'], 2,
                             'is not an earlier identity checkpoint'),
      'align onto photos': (['align', 'photos/', '--output', 'photos/'], 2, 'is the input'),
      'align inside photos': (['align', 'photos', '--output', 'photos/aligned'], 2,
                              'lies inside the input'),
      'align to a file': (['align', 'photos', '--output', 'a_file'], 2, 'is not a folder'),
      'align size 4': (['align', 'photos', '--output', 'out', '--size', '4'], 2,
                       'flag --size=4: 4 is not'),
      'build bad name': (['build', 'nosuch/1', '--data_dir', str(tfds_dir)], 2,
                         "unknown dataset 'nosuch/1'"),
      'build no manual_dir': (['build', 'aligned_faces/folder', '--data_dir', str(tfds_dir)],
                              2, 'needs your files: give --manual_dir=DIR'),
      'build missing manual_dir': (['build', 'aligned_faces/folder', '--data_dir',
                                    str(tfds_dir), '--manual_dir', 'nope'], 2,
                                   'nope: no such folder'),
      'train unknown field': (train + ['--workdir', 'w1', '--config.nonexistent=1'], 2,
                              "unknown config field 'nonexistent' in --config.nonexistent=1"),
      'train typo': (train + ['--workdir', 'w1', '--config.per_device_batch=2'], 2,
                     "did you mean 'per_device_batch_size'?"),
      'train missing config': (['train', '--config', 'nope.py', '--workdir', 'w2'], 2,
                               'config file not found: nope.py'),
      'train batch -1': (train + ['--workdir', 'w3', '--config.per_device_batch_size=-1'], 2,
                         'per_device_batch_size=-1 must be >= 1'),
      'train size 65': (train + ['--workdir', 'w4', '--config.image_size=65'], 2,
                        'image_size=65 must be a multiple of 32'),
      'train unknown dataset': (train + ['--workdir', 'w5', '--config.dataset.name=nosuch/64'],
                                2, "unknown dataset 'nosuch/64'"),
      'train unknown dataset config': (
          train + ['--workdir', 'w6', '--config.dataset.name=synthetic_faces/99'], 2,
          "unknown dataset config 'synthetic_faces/99'; known: synthetic_faces/64"),
      'train unbuilt ffhq': (train + data + ['--workdir', 'w7',
                                             '--config.dataset.name=aligned_faces/ffhq'], 2,
                             'aligned_faces/ffhq is not built in'),
      'train no identity': (train + ['--workdir', 'w8', '--config.identity.allow_random=False'],
                            2, 'needs a frozen ArcFace identity encoder'),
      'train workdir is a file': (train + ['--workdir', 'a_file'], 2,
                                  'a_file is a file, not a folder'),
      'train workdir in use': (train + data + ['--workdir', 'busy'], 2,
                               f'workdir {busy} is in use by PID {os.getpid()} on '
                               f'{socket.gethostname()}'),
      'train-arcface regression on real faces': (
          ['train-arcface', '--config', os.path.join(REPO, 'configs', 'arcface_tiny.py'),
           '--workdir', 'w9', '--config.dataset.name=aligned_faces/ffhq'] + data, 2,
          'it needs a synthetic_faces/* dataset'),
      'train-arcface workdir in use': (
          ['train-arcface', '--config', os.path.join(REPO, 'configs', 'arcface_tiny.py'),
           '--workdir', 'busy'] + data, 2, 'is in use by PID'),
      'swap huge source': (['swap', '--checkpoint', 'E', '--source', 'huge.png', '--target',
                            'photos/a.png', '--output', 'out.png'], 2,
                           'image too large'),
  }
  cases = {name: {'argv': argv, 'cwd': str(work)} for name, (argv, _, _) in bad.items()}
  # The README's export line as typed (relative paths) on a workdir whose newest
  # checkpoint is truncated.
  relative = tmp_path / 'relative'
  shutil.copytree(swap_helpers.tiny_export(tmp_path_factory)[0],
                  relative / 'workdirs' / 'synthetic')
  ckpts = relative / 'workdirs' / 'synthetic' / 'checkpoints'
  shutil.copytree(ckpts / '3', ckpts / '4')
  for folder, _, files in os.walk(ckpts / '4' / 'state'):
    for name in files:
      if os.path.getsize(os.path.join(folder, name)) > 1000:
        os.truncate(os.path.join(folder, name), 10)
  cases['export relative'] = {'argv': ['export', '--workdir', 'workdirs/synthetic', '--output',
                                       'exports/synthetic'], 'cwd': str(relative)}
  cases.update({f'help {sub}': {'argv': [sub, '--helpfull']} for sub in _readme_commands()})
  with workdir_lib.acquire(str(busy)):  # held by this process: the runs must not get it
    before = _snapshot(work)
    start = time.time()
    results = cli_helpers.run_cases(cases, env=swap_helpers.cli_env(tmp_path_factory))
    seconds = time.time() - start
    after = _snapshot(work)
  print(f'{len(cases)} command lines in {seconds:.1f} s:',
        {name: r['seconds'] for name, r in results.items()})
  return {'bad': bad, 'results': results, 'before': before, 'after': after,
          'tfds_dir': tfds_dir, 'relative': relative}


def test_bad_input_is_one_line_exit_2_and_nothing_is_written(cli):
  """Every case: exit code, exactly one stderr line with the message, and the whole tree
  (inputs included) byte-identical afterwards."""
  for name, (argv, code, message) in cli['bad'].items():
    result = cli['results'][name]
    lines = result['stderr'].strip().splitlines()
    assert result['code'] == code, (name, result['stderr'][-3000:])
    assert len(lines) == 1 and lines[0].startswith(f'fsjax {argv[0]}: error: '), (name, lines)
    assert message in lines[0], (name, lines[0])
  assert cli['after'] == cli['before'], 'a refused command changed files'
  assert not os.path.exists(cli['tfds_dir'])


def test_readme_command_lines_name_real_subcommands_and_flags(cli):
  """Every `fsjax SUB --flag` in README.md exists (the flags as `fsjax SUB --helpfull` lists
  them), so the docs cannot drift from the commands."""
  used = _readme_commands()
  unknown = sorted(set(used) - set(main.COMMANDS))
  assert not unknown, f'README names subcommands that do not exist: {unknown}'
  assert {'train', 'export', 'swap', 'eval', 'align', 'build'} <= set(used)
  missing = []
  for sub, flags_used in used.items():
    result = cli['results'][f'help {sub}']
    listed = set(re.findall(r'^\s+--(?:\[no\])?([\w-]+)', result['stdout'], re.M))
    assert listed, (sub, result['stderr'][-2000:])  # (absl's --helpfull exits 1)
    missing += [f'fsjax {sub} --{flag}' for flag in sorted(flags_used - listed)]
  assert not missing, f'README flags that the commands do not have: {missing}'


def test_readme_commands_with_relative_paths_and_an_unreadable_checkpoint(cli, monkeypatch,
                                                                          caplog):
  """`fsjax export --workdir workdirs/synthetic --output exports/synthetic` as the README types
  it, and `fsjax.load_swapper('exports/synthetic')`; the workdir's newest checkpoint is
  truncated: one warning naming the step used, no tracebacks."""
  import fsjax  # pylint: disable=g-import-not-at-top
  result = cli['results']['export relative']
  assert result['code'] == 0, result['stderr'][-3000:]
  lines = result['stderr'].strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('fsjax export: warning: '), lines[:20]
  assert 'unreadable' in lines[0] and lines[0].endswith('using step 3'), lines[0]
  assert 'step 3' in result['stdout']
  monkeypatch.chdir(cli['relative'])
  swapper = fsjax.load_swapper('exports/synthetic')
  assert swapper.meta['source']['step'] == 3
  # `fsjax swap --checkpoint WORKDIR` loads it so: one warning, nothing else logged.
  with caplog.at_level(logging.WARNING):
    with pytest.warns(export.UnreadableCheckpointWarning, match='using step 3') as caught:
      swapper = fsjax.load_swapper('workdirs/synthetic')
  assert len(caught) == 1 and swapper.meta['source']['step'] == 3
  assert not caplog.records, [r.getMessage()[:200] for r in caplog.records[:5]]
