"""The one-line error (and warning) every fsjax subcommand prints for bad input."""

import re
import sys
import warnings


def fail(command: str, message: object, status: int = 2) -> int:
  """Prints 'fsjax COMMAND: error: MESSAGE' (whitespace folded to one line) to stderr.

  Returns `status` (default 2, bad input), so a command can `return fail(...)`.
  """
  print(f'fsjax {command}: error: {" ".join(str(message).split())}', file=sys.stderr)
  return status


def flag_error(error: Exception, argv) -> str:
  """What was wrong with the command line, for an exception raised while parsing flags.

  absl raises flags.Error; a `--config.a.b=v` override of a field the config lacks raises
  KeyError / AttributeError from ml_collections (named here with its did-you-mean hint).
  """
  text = str(error).replace('\\n', ' ')
  if isinstance(error, (KeyError, AttributeError)):
    hint = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
    key = re.search(r"'([^'\\]+)'", text)
    key = hint.group(2) if hint else key.group(1) if key else text
    override = next((a for a in argv if re.match(r'--\w+\.', a) and f'.{key}' in a), None)
    return (f'unknown config field {key!r}' + (f' in {override}' if override else '')
            + (f'; did you mean {hint.group(1)!r}?' if hint else ''))
  if type(error).__module__.startswith('absl'):
    return text
  return f'{type(error).__name__}: {text}'


def one_line_warnings(command: str) -> None:
  """Shows every Python warning as one line 'fsjax COMMAND: warning: MESSAGE' on stderr."""

  def show(message, category, filename, lineno, file=None, line=None):
    del category, filename, lineno, line
    print(f'fsjax {command}: warning: {" ".join(str(message).split())}',
          file=file or sys.stderr)

  warnings.showwarning = show
