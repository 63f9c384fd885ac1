"""The `fsjax` command: dispatches `fsjax SUBCOMMAND [flags]` to fsjax.commands.

This file only picks the subcommand; each subcommand module defines its absl
flags and calls into the importable library (the same functions Colab uses).
"""

import importlib
import sys

# name -> (module under fsjax.commands, one-line help)
COMMANDS = {
    'align': ('align', 'Detect and align faces in photos (PNG crops + landmarks.json).'),
    'build': ('build', 'Build a TFDS dataset (synthetic_faces, aligned_faces) without TensorFlow.'),
    'convert-arcface': ('convert_arcface', 'Convert an arcface_torch .pth or InsightFace ONNX recognizer.'),
    'train-arcface': ('train_arcface', 'Train an ArcFace identity encoder.'),
    'train': ('train', 'Train AEI-Net (FaceShifter) on all devices of all hosts.'),
    'eval': ('evaluate', 'Score swaps on the synthetic pairs split (identity and ground truth).'),
    'export': ('export', 'Export a trained swapper for inference (Colab).'),
    'swap': ('swap', 'Swap faces in an image or a video.'),
    'bench': ('bench', 'Throughput benchmark (train, swap, data), optionally against PyTorch.'),
}


def _usage() -> str:
  lines = ['usage: fsjax SUBCOMMAND [flags]   (fsjax SUBCOMMAND --help for its flags)', '',
           'subcommands:']
  for name, (_, text) in COMMANDS.items():
    lines.append(f'  {name:<16} {text}')
  return '\n'.join(lines)


def _show_in_help(module) -> None:
  """Makes `fsjax NAME --help` print the subcommand's docstring and flags.

  absl's --help prints the __main__ module's docstring and the key flags of sys.argv[0];
  without this it shows only 'USAGE: fsjax [flags]'.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  if module.__doc__:
    sys.modules['__main__'].__doc__ = module.__doc__
  for flag in flags.FLAGS.get_flags_for_module(module.__name__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(argv=None):
  """Console-script entry point."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(_usage())
    return 0 if len(argv) >= 2 else 2
  name = argv[1]
  if name not in COMMANDS:
    print(f'fsjax: unknown subcommand {name!r}\n\n{_usage()}', file=sys.stderr)
    return 2
  module = importlib.import_module(f'fsjax.commands.{COMMANDS[name][0]}')
  from absl import app  # pylint: disable=g-import-not-at-top
  _show_in_help(module)
  app.run(module.main, argv=[f'fsjax {name}'] + argv[2:])
  return 0


if __name__ == '__main__':
  sys.exit(run())
