"""The one-line error every fsjax subcommand prints for bad input."""

import sys


def fail(command: str, message: object, status: int = 2) -> int:
  """Prints 'fsjax COMMAND: error: MESSAGE' (whitespace folded to one line) to stderr.

  Returns `status` (default 2, bad input), so a command can `return fail(...)`.
  """
  print(f'fsjax {command}: error: {" ".join(str(message).split())}', file=sys.stderr)
  return status
