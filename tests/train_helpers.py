"""Shared pieces of tests/test_train.py: the test config, an in-memory face source, and a
worker that runs `trainer.train_and_evaluate` in a subprocess (resume, SIGTERM and
multi-process tests).

As a script:
  python tests/train_helpers.py --workdir W --steps N [--devices 4] [--checkpoint_every K]
      [--coordinator 127.0.0.1:PORT --num_processes 2 --process_id I]
prints 'STEP_DONE <k>' lines while training (log_every_steps = 1) and
'PARAMS_DIGEST <sha256>' of the final state on success.
"""

import argparse
import hashlib
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# configs/tiny.py shrunk to 16 px, 3 encoder levels and a 1-scale D: about half the
# compile time of tiny, for tests of the training machinery rather than the model (the
# tiny model's step is compiled by tests/test_bench.py). As `--config.KEY=VALUE` overrides
# in `micro_flags`.
MICRO = {
    'image_size': 16,
    'model.attr_channels': (4, 8, 16),
    'model.gen_channels': (16, 16, 8, 8),
    'discriminator.num_d': 1,
    'discriminator.n_layers': 2,
}


def micro_flags():
  """MICRO as command-line overrides of configs/tiny.py."""
  return [f'--config.{k}={v}' for k, v in MICRO.items()]


def test_config(steps: int = 3, checkpoint_every: int = 2, sample_every: int = 0):
  """configs/tiny.py with MICRO at batch 1 per device, random identity encoder, logs every
  step."""
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  from configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.per_device_batch_size = 1
  config.num_train_steps = steps
  config.log_every_steps = 1
  config.sample_every_steps = sample_every
  config.checkpoint_every_steps = checkpoint_every
  config.keep_checkpoints = 10
  config.identity.allow_random = True
  config.dataset.num_workers = 0
  config.dataset.prefetch = 1
  config.update_from_flattened_dict(MICRO)
  return config


def fake_source(num_identities: int = 6, per_identity: int = 2, size: int = 64, seed: int = 0):
  """InMemorySource of smooth random 'faces': uint8 [N, size, size, 3] with identity labels."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fsjax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  rs = np.random.RandomState(seed)
  n = num_identities * per_identity
  coarse = rs.randint(0, 256, (n, 8, 8, 3)).astype(np.float32)
  images = np.repeat(np.repeat(coarse, size // 8, axis=1), size // 8, axis=2)
  images = np.clip(images + rs.normal(0, 8, images.shape), 0, 255).astype(np.uint8)
  labels = np.repeat(np.arange(num_identities), per_identity)
  return input_pipeline.InMemorySource(images, labels)


def dilate(mask, r: int = 1):
  """bool [H, W] mask grown by r pixels in every direction (square; wraps at the border)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  out = mask.copy()
  for dy in range(-r, r + 1):
    for dx in range(-r, r + 1):
      out |= np.roll(np.roll(mask, dy, 0), dx, 1)
  return out


def state_digest(state) -> str:
  """sha256 over every array of a TrainState (host copies), in tree order."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fsjax.train import loop  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(loop.to_host(state)):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(str(a.dtype).encode() + str(a.shape).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def read_scalars(event_dir):
  """{tag: {step: value}} from tensorboardX event files (TFRecord framing, Event protos)."""
  import glob  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out = {}
  for path in glob.glob(os.path.join(event_dir, 'events.out.tfevents.*')):
    with open(path, 'rb') as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack('<Q', data[pos:pos + 8])
      record = data[pos + 12:pos + 12 + length]
      pos += 12 + length + 4
      event = event_pb2.Event()
      event.ParseFromString(record)
      for value in event.summary.value:
        if value.HasField('simple_value'):
          out.setdefault(value.tag, {})[event.step] = value.simple_value
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--steps', type=int, required=True)
  parser.add_argument('--devices', type=int, default=4)
  parser.add_argument('--checkpoint_every', type=int, default=2)
  parser.add_argument('--coordinator', default='')
  parser.add_argument('--num_processes', type=int, default=None)
  parser.add_argument('--process_id', type=int, default=None)
  args = parser.parse_args()

  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  os.environ['XLA_FLAGS'] = ' '.join(flags + [
      f'--xla_force_host_platform_device_count={args.devices}'])
  os.environ['JAX_PLATFORMS'] = 'cpu'
  sys.path.insert(0, REPO)

  import logging  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from fsjax.train import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
  from fsjax.aei import trainer  # pylint: disable=g-import-not-at-top
  from fsjax.train import loop as trainer_loop  # pylint: disable=g-import-not-at-top

  class StepLines(logging.Handler):

    def emit(self, record):
      msg = record.getMessage()
      if msg.startswith('step '):
        print('STEP_DONE', msg.split()[1].split('/')[0], flush=True)
      elif msg.startswith('resuming from step'):
        print('RESUMED', msg.split()[-1], flush=True)
      elif 'SIGTERM' in msg or 'unreadable' in msg:
        print('LOG', msg, flush=True)

  root = logging.getLogger()
  root.setLevel(logging.INFO)
  root.addHandler(StepLines())
  for noisy in ('absl', 'jax', 'orbax'):
    logging.getLogger(noisy).setLevel(logging.WARNING)

  config = test_config(steps=args.steps, checkpoint_every=args.checkpoint_every)
  source = fake_source(size=config.image_size)
  state = trainer.train_and_evaluate(config, args.workdir, data_source=source)
  print('PARAMS_DIGEST', state_digest(state), 'STEP', int(trainer_loop.to_host(state.step)),
        'PROCESS', jax.process_index(), flush=True)


if __name__ == '__main__':
  main()
