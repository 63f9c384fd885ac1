"""The PyTorch baseline of `fsjax bench --compare_torch`: the same training step in PyTorch.

Uses the independent PyTorch reference models in fsjax.bench.torch_reference (AEI-Net,
multi-scale discriminator, IResNet) built from the same config, with the same losses and
optimizers as fsjax.aei.train_lib:

  z_s = normalise(E(crop(X_s)))                              (E frozen, eval mode)
  G step: Y, z_att(X_t) = G(X_t, z_s); L_G = adv * mean_k relu(1 - D_k(Y)) + att * L_att
          + id * (1 - cos(E(crop(Y)), z_s)) + rec * L_rec;  Adam(lr, b1, b2); EMA of G.
  D step: L_D = 0.5 * (mean_k relu(1 - D_k(X_real)) + mean_k relu(1 + D_k(Y.detach())))

on the same synthetic batch (fsjax.bench.train.synthetic_batch), resolution and precision policy
(float32 parameters; bfloat16 autocast when config.model.dtype is bfloat16), on the device
JAX uses (CUDA when JAX runs on a GPU, else CPU with as many threads as XLA's intra-op
pool). D's parameters are frozen during the G backward (as good PyTorch GAN code does) so
neither framework computes gradients it throws away.

PyTorch is the optional [torch] extra; without it `TorchReferenceUnavailable` says so in one
line.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import ml_collections
import numpy as np

from fsjax.bench import machine
from fsjax.bench import train as bench_train_lib
from fsjax.identity import resolve

VARIANTS = ('eager', 'eager_channels_last', 'compile')


class TorchReferenceUnavailable(RuntimeError):
  """PyTorch (the [torch] extra) is not installed."""


def import_reference():
  """Returns the (aei, discriminator, iresnet) modules of fsjax.bench.torch_reference."""
  try:
    # pylint: disable=g-import-not-at-top
    from fsjax.bench.torch_reference import aei
    from fsjax.bench.torch_reference import discriminator
    from fsjax.bench.torch_reference import iresnet
  except ImportError as e:
    raise TorchReferenceUnavailable(
        f'--compare_torch needs PyTorch (pip install "fsjax[torch]"): {e}') from None
  return aei, discriminator, iresnet


def xla_cpu_threads() -> int:
  """Threads of XLA's CPU intra-op pool: one per schedulable core (its default)."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def _device():
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  if jax.devices()[0].platform == 'gpu' and torch.cuda.is_available():
    return torch.device('cuda')
  return torch.device('cpu')


def _identity_crop(x, mode: str, out: int = 112):
  """NCHW counterpart of fsjax.models.arcface.identity_crop (align_corners bilinear)."""
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  if mode == 'crop_19_237':
    s = x.shape[-1]
    lo, hi = round(19 * s / 256), round(237 * s / 256)
    x = x[:, :, lo:hi, lo:hi]
  elif mode != 'resize':
    raise ValueError(f'unknown identity crop mode {mode!r}')
  return F.interpolate(x, size=(out, out), mode='bilinear', align_corners=True)


def _normalise(e):
  return e / e.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def build_step(config: ml_collections.ConfigDict, device, variant: str = 'eager'):
  """Builds models, optimizers and a `step(x_s, x_t, same) -> (g_loss, d_loss)` closure.

  Args:
    config: training config (model.*, discriminator.*, identity.arch/crop_mode, loss.*,
      optimizer.*, ema_decay, model.dtype).
    device: torch device.
    variant: 'eager', 'eager_channels_last' or 'compile' (torch.compile of both losses).
  Returns:
    (step, info dict with parameter counts).
  """
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  aei, disc_ref, iresnet = import_reference()
  if variant not in VARIANTS:
    raise ValueError(f'unknown torch variant {variant!r}; expected one of {VARIANTS}')
  torch.manual_seed(int(config.seed))
  memory_format = (torch.channels_last if variant == 'eager_channels_last'
                   else torch.contiguous_format)
  gen = aei.init_weights(aei.from_model_config(config.model)).to(
      device, memory_format=memory_format)
  disc = disc_ref.init_weights(disc_ref.from_config(config.discriminator)).to(
      device, memory_format=memory_format)
  layout = resolve.layout(config)
  ident = iresnet.IResNet(tuple(layout['layers']), layout['width'], layout['embedding_dim'],
                          layout['bn_eps'], layout['stem_stride'])
  ident = ident.to(device, memory_format=memory_format).eval()
  for p in ident.parameters():
    p.requires_grad_(False)
  gen.train()
  disc.train()
  opt = config.optimizer
  g_opt = torch.optim.Adam(gen.parameters(), lr=opt.g_learning_rate, betas=(opt.b1, opt.b2))
  d_opt = torch.optim.Adam(disc.parameters(), lr=opt.d_learning_rate, betas=(opt.b1, opt.b2))
  ema = [p.detach().clone() for p in gen.parameters()]
  decay = float(config.ema_decay)
  loss_cfg = config.loss
  crop_mode = config.identity.crop_mode
  bf16 = machine.is_bf16(config.model.dtype)  # pylint: disable=protected-access
  amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

  def embed(x):
    return _normalise(ident(_identity_crop(x, crop_mode)).float())

  def g_loss_fn(x_t, z_s, same):
    y, z_att_t = gen(x_t, z_s)
    z_att_y = gen.get_attr(y)
    fake = disc(y)
    if loss_cfg.adv_g == 'hinge':
      adv = sum(F.relu(1 - l.float()).mean() for l in fake) / len(fake)
    else:
      adv = sum((-l.float()).mean() for l in fake) / len(fake)
    att = 0.5 * sum(F.mse_loss(a.float(), b.float()) for a, b in zip(z_att_y, z_att_t))
    idl = (1 - (embed(y) * z_s).sum(-1)).mean()
    per = 0.5 * (y.float() - x_t).square().mean(dim=(1, 2, 3))
    rec = (per * same).sum() / same.sum().clamp_min(1.0)
    total = loss_cfg.adv * adv + loss_cfg.att * att + loss_cfg.id * idl + loss_cfg.rec * rec
    return total, y

  def d_loss_fn(x_real, y):
    real = disc(x_real)
    fake = disc(y)
    r = sum(F.relu(1 - l.float()).mean() for l in real) / len(real)
    f = sum(F.relu(1 + l.float()).mean() for l in fake) / len(fake)
    return 0.5 * (r + f)

  if variant == 'compile':
    g_loss_fn = torch.compile(g_loss_fn)
    d_loss_fn = torch.compile(d_loss_fn)
  real_is_source = config.discriminator.real_input == 'source'

  def step(x_s, x_t, same):
    with amp:
      with torch.no_grad():
        z_s = embed(x_s)
      for p in disc.parameters():
        p.requires_grad_(False)
      g_loss, y = g_loss_fn(x_t, z_s, same)
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    g_opt.step()
    with torch.no_grad():
      params = [p.detach() for p in gen.parameters()]
      torch._foreach_lerp_(ema, params, 1.0 - decay)  # pylint: disable=protected-access
    for p in disc.parameters():
      p.requires_grad_(True)
    with amp:
      d_loss = d_loss_fn(x_s if real_is_source else x_t, y.detach())
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    return g_loss.detach(), d_loss.detach()

  info = {'g_params': aei.count_params(gen), 'd_params': aei.count_params(disc),
          'identity_params': sum(p.numel() for p in ident.parameters())}
  return step, info


def bench_train_torch(config: ml_collections.ConfigDict, *, batch_size: int, steps: int = 10,
                      warmup: int = 2, variant: str = 'eager', threads: int | None = None,
                      device: str | None = None) -> dict[str, Any]:
  """Times the PyTorch reference training step; figures keyed like bench.train.bench_train's.

  Args:
    config: training config (as given to bench.train.bench_train).
    batch_size: rows per step (the JAX global batch, on one device).
    steps: timed steps (each followed by a device synchronisation).
    warmup: untimed steps first (torch.compile compiles in the first).
    variant: 'eager' | 'eager_channels_last' | 'compile'.
    threads: CPU threads (default: XLA's intra-op thread count).
    device: 'cpu' or 'cuda' (default: CUDA when JAX runs on a GPU, else CPU).
  """
  import torch  # pylint: disable=g-import-not-at-top
  config = bench_train_lib.bench_config(config)
  device = torch.device(device) if device else _device()
  result: dict[str, Any] = {
      'mode': 'train', 'framework': 'torch', 'variant': variant,
      'torch_version': torch.__version__, 'device': str(device),
      'image_size': int(config.image_size), 'dtype': config.model.dtype,
      'global_batch_size': int(batch_size), 'per_device_batch_size': int(batch_size),
      'num_devices': 1, 'steps': int(steps), 'warmup_steps': int(warmup)}
  if device.type == 'cpu':
    threads = int(threads or xla_cpu_threads())
    torch.set_num_threads(threads)
    result['threads'] = threads
  else:
    result['device_kind'] = torch.cuda.get_device_name(device)
    torch.cuda.reset_peak_memory_stats(device)
    # Fixed shapes: let cuDNN pick its fastest algorithms (what tuned PyTorch code does;
    # XLA autotunes its convolutions too). TF32 as XLA's default float32 precision.
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
  t0 = time.perf_counter()
  step, info = build_step(config, device, variant)
  result.update(info)
  host = bench_train_lib.synthetic_batch(config, int(batch_size), seed=int(config.seed))
  memory_format = (torch.channels_last if variant == 'eager_channels_last'
                   else torch.contiguous_format)

  def to_dev(a):
    t = torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(device)
    return (t.float() / 127.5 - 1.0).contiguous(memory_format=memory_format)

  x_s, x_t = to_dev(host['source']), to_dev(host['target'])
  same = torch.from_numpy(host['same']).to(device)
  sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
  result['setup_s'] = time.perf_counter() - t0

  t0 = time.perf_counter()
  out = step(x_s, x_t, same)
  sync()
  result['first_step_s'] = time.perf_counter() - t0
  for _ in range(max(int(warmup) - 1, 0)):
    out = step(x_s, x_t, same)
  sync()
  times = []
  for _ in range(int(steps)):
    t = time.perf_counter()
    out = step(x_s, x_t, same)
    sync()
    times.append(time.perf_counter() - t)
  result['g_loss'], result['d_loss'] = float(out[0]), float(out[1])
  result.update(machine.timing_stats(times))
  result['images_per_s'] = batch_size / result['step_s_median']
  result['images_per_s_per_device'] = result['images_per_s']
  result['compile_s'] = result['first_step_s'] if variant == 'compile' else None
  result['peak_memory_bytes'] = (int(torch.cuda.max_memory_allocated(device))
                                 if device.type == 'cuda' else None)
  result['flops_per_step'] = result['mfu'] = None
  return result


def bench_train_torch_subprocess(config: ml_collections.ConfigDict, **kwargs) -> dict[str, Any]:
  """`bench_train_torch` on the CPU in a fresh process (same arguments; device is 'cpu').

  On a CPU, PyTorch's OpenMP threads and XLA's thread pool in one process get in each
  other's way (PyTorch measured 5-50x slower after a JAX run in the same process on a
  2-core machine); a child process gives PyTorch the cores to itself, as JAX has them.
  """
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import_reference()  # fail here, with the one-line message, if unavailable
  with tempfile.TemporaryDirectory() as tmp:
    request = os.path.join(tmp, 'request.json')
    answer = os.path.join(tmp, 'result.json')
    with open(request, 'w') as f:
      json.dump({'config': config.to_json(), 'kwargs': dict(kwargs, device='cpu')}, f)
    env = dict(os.environ)
    # The folder holding the fsjax package, so the child imports this very copy of it.
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env['PYTHONPATH'] = repo + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    proc = subprocess.run([sys.executable, '-m', 'fsjax.bench.torch_baseline', request, answer],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
      raise RuntimeError(f'PyTorch benchmark process failed:\n{proc.stderr[-3000:]}')
    with open(answer) as f:
      return json.load(f)


def _main(argv: list[str]) -> None:
  """Child-process entry: `python -m fsjax.bench.torch_baseline REQUEST.json RESULT.json`."""
  import json  # pylint: disable=g-import-not-at-top
  with open(argv[1]) as f:
    request = json.load(f)
  config = ml_collections.ConfigDict(json.loads(request['config']))
  result = bench_train_torch(config, **request['kwargs'])
  result['process'] = 'child'
  with open(argv[2], 'w') as f:
    json.dump(result, f)


if __name__ == '__main__':
  _main(sys.argv)
