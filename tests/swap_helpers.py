"""Test helpers for the swap tests: a tiny training workdir and export, test media.

The tiny model is filled with seeded random numbers of the right shapes
(fsjax.swap.random_weights.random_variables on jax.eval_shape), not `module.init`: compiling the init of
AEI-Net takes minutes on a 2-core CPU, the forward pass seconds. The workdir is written with
the trainer's own Checkpointer and TrainState, so export reads exactly what training writes. The export is made once per pytest session (cached under
the session's base temp dir) and shared by test_swap.py and test_notebook.py.
"""

import os
import subprocess
import sys

import imageio_ffmpeg
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

EMA_OFFSET = 0.25  # ema_params = g_params + this, so tests can tell which one was exported


def make_workdir(path: str):
  """A training workdir as the trainer writes it (tiny config, step 3) + its identity encoder.

  Returns:
    (config, state) with state.ema_params = state.g_params + EMA_OFFSET.
  """
  from configs import tiny  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from fsjax import models
  from fsjax.aei import train_lib
  from fsjax.identity import checkpoint as identity
  from fsjax.models import random_weights
  from fsjax.train import checkpointing
  config = tiny.get_config()
  # Trained with an identity checkpoint (what real runs do), kept in the workdir.
  config.identity.allow_random = False
  config.identity.checkpoint = os.path.join(path, 'identity')
  size, id_dim = config.image_size, config.model.id_dim
  generator = models.build_generator(config)
  discriminator = models.build_discriminator(config)
  x, z = jnp.zeros((1, size, size, 3)), jnp.zeros((1, id_dim))
  key = jax.random.key(0)
  g_vars = random_weights.random_variables(jax.eval_shape(lambda: generator.init(key, x, z)), 1)
  d_vars = random_weights.random_variables(jax.eval_shape(lambda: discriminator.init(key, x)), 2)
  g_tx, d_tx = train_lib.make_optimizers(config)
  state = train_lib.TrainState(
      step=jnp.array(3, jnp.int32), g_params=g_vars['params'],
      g_batch_stats=g_vars.get('batch_stats', {}), d_params=d_vars['params'],
      d_batch_stats=d_vars.get('batch_stats', {}), g_opt_state=g_tx.init(g_vars['params']),
      d_opt_state=d_tx.init(d_vars['params']),
      ema_params=jax.tree.map(lambda a: a + EMA_OFFSET, g_vars['params']),
      rng=jnp.zeros(2, jnp.uint32), nonfinite_count=jnp.zeros((), jnp.int32),
      nonfinite_total=jnp.zeros((), jnp.int32))
  ckpt = checkpointing.Checkpointer(path, async_save=False)
  ckpt.save(3, state, config=config)
  ckpt.close()
  id_meta = identity.make_meta((1, 1, 1, 1), 8, 64, 1e-5, alignment='ffhq', arch='tiny')
  id_module = identity.module_from_meta(id_meta)
  id_vars = random_weights.random_variables(identity.abstract_variables(id_module), 3)
  identity.save_identity(os.path.join(path, 'identity'), id_vars, id_meta)
  return config, state


def cli_env(tmp_path_factory) -> dict:
  """Environment for `fsjax` subprocesses: a session-wide persistent compilation cache."""
  cache = tmp_path_factory.getbasetemp() / 'jax_cache'
  return dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache))


def run_cli(args, env, cwd=None) -> subprocess.CompletedProcess:
  """Runs `fsjax ARGS...` (python -m fsjax.main, in `cwd`) and captures its output."""
  return subprocess.run([sys.executable, '-m', 'fsjax.main'] + list(args), capture_output=True,
                        text=True, env=env, timeout=300, check=False, cwd=cwd)


def tiny_export(tmp_path_factory) -> tuple[str, str]:
  """(workdir, export dir), made once per session under the session's base temp dir.

  The export is written by the real `fsjax export` command.
  """
  base = tmp_path_factory.getbasetemp()
  workdir, out = str(base / 'swap_workdir'), str(base / 'swap_export')
  if not os.path.isdir(out):
    make_workdir(workdir)
    result = run_cli(['export', '--workdir', workdir, '--output', out],
                     cli_env(tmp_path_factory))
    if result.returncode != 0:
      raise RuntimeError(f'fsjax export failed: {result.stderr[-3000:]}')
  return workdir, out


def synthetic_source(size: int = 256, image: int = 0) -> np.ndarray:
  """A frontal synthetic face (identity 0 of the synthetic_faces train split), uint8 [S, S, 3]."""
  from fsjax.data import synthetic_faces as sf  # pylint: disable=g-import-not-at-top
  identity = sf.sample_identity(sf.identity_rng(0, 'train', 0))
  attributes = sf.replace_fields(sf.sample_attributes(sf.attribute_rng(0, 'train', 0, image)),
                                 sf.ATTRIBUTE_FIELDS, yaw=0.0, pitch=0.0, roll=0.0, occluder=0)
  return sf.render(identity, attributes, size)


def write_video(path: str, frames, fps: float, audio: bool = True) -> None:
  """Writes uint8 [N, H, W, 3] frames as H.264 MP4 (+ a 440 Hz AAC tone when audio)."""
  height, width = frames[0].shape[:2]
  silent = path + '.silent.mp4' if audio else path
  writer = imageio_ffmpeg.write_frames(silent, (width, height), fps=fps, macro_block_size=1,
                                       ffmpeg_log_level='error', quality=None,
                                       output_params=['-crf', '10'])
  writer.send(None)
  for frame in frames:
    writer.send(np.ascontiguousarray(frame).tobytes())
  writer.close()
  if audio:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-y', '-v', 'error', '-i', silent, '-f',
                    'lavfi', '-i', f'sine=frequency=440:duration={len(frames) / fps}', '-c:v',
                    'copy', '-c:a', 'aac', path], check=True)
    os.remove(silent)


def streams(path: str) -> list[str]:
  """The 'Stream #...' lines ffmpeg prints for a file."""
  result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-hide_banner', '-i', path],
                          capture_output=True, text=True, check=False)
  return [line.strip() for line in result.stderr.splitlines() if 'Stream #' in line]


def save(path, image) -> str:
  Image.fromarray(np.asarray(image, np.uint8)).save(path)
  return str(path)


# GHOST's depth (7 encoder levels, 8 AAD ResBlks, 256 px) at tiny widths; 64-d z_id (the
# tiny IResNet's embedding).
GHOST_TINY_ATTR = (2, 4, 4, 8, 8, 8, 8)
GHOST_TINY_GEN = (16, 16, 16, 16, 12, 8, 6, 4)


def tiny_ghost_files(folder, seed: int = 11) -> tuple[dict, dict]:
  """GHOST's release files with random weights, torch.save'd under their release names:
  G_unet_2blocks.pth (tiny widths, random batch-norm statistics), D_unet_2blocks.pth (tiny,
  n_layers 5) and backbone.pth (tiny arcface_torch IResNet).

  Returns:
    ({'G', 'D', 'backbone'}: path, the same keys: the eval-mode torch modules).
  """
  # pylint: disable=g-import-not-at-top
  import torch
  from fsjax.bench.torch_reference import ghost
  from fsjax.bench.torch_reference import iresnet
  torch.manual_seed(seed)
  modules = {'G': ghost.AEI_Net(2, 64, GHOST_TINY_ATTR, GHOST_TINY_GEN),
             'D': ghost.MultiscaleDiscriminator(ndf=4, n_layers=5, max_channels=16),
             'backbone': iresnet.iresnet('tiny')}
  names = {'G': 'G_unet_2blocks.pth', 'D': 'D_unet_2blocks.pth', 'backbone': 'backbone.pth'}
  files = {}
  for key, module in modules.items():
    iresnet.randomize_batchnorm(module, seed)
    module.eval()
    files[key] = os.path.join(folder, names[key])
    torch.save(module.state_dict(), files[key])
  return files, modules
