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
    'convert-generator': ('convert_generator', 'Convert GHOST (sber-swap) AEI-Net weights into a swapper export.'),
    'train-arcface': ('train_arcface', 'Train an ArcFace identity encoder.'),
    'train': ('train', 'Train AEI-Net (FaceShifter) on all devices of all hosts.'),
    'train-hear': ('train_hear', 'Train HEAR-Net (FaceShifter stage 2) on top of an AEI-Net.'),
    'eval': ('evaluate', 'Score swaps (ID retrieval, pose, expression): synthetic pairs, FF++, a pairs.csv.'),
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
  sys.argv = argv  # config_flags finds the --config.a.b=v overrides in sys.argv
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(_usage())
    return 0 if len(argv) >= 2 else 2
  name = argv[1]
  if name not in COMMANDS:
    print(f'fsjax: unknown subcommand {name!r}\n\n{_usage()}', file=sys.stderr)
    return 2
  module = importlib.import_module(f'fsjax.commands.{COMMANDS[name][0]}')
  from absl import app  # pylint: disable=g-import-not-at-top
  from fsjax.commands import errors  # pylint: disable=g-import-not-at-top
  _show_in_help(module)
  errors.one_line_warnings(name)
  app.run(module.main, argv=[f'fsjax {name}'] + argv[2:], flags_parser=_flags_parser(name))
  return 0


def _flags_parser(name: str):
  """absl's flag parsing, but bad flags give one line 'fsjax NAME: error: ...' and exit 2."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from fsjax.commands import errors  # pylint: disable=g-import-not-at-top

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
      # flags.Error, or a --config.a.b=v override the config file rejects.
      sys.exit(errors.fail(name, f'{errors.flag_error(e, argv)} (see fsjax {name} --help)'))

  return parse


if __name__ == '__main__':
  sys.exit(run())
