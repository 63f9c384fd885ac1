"""The error every evaluation protocol raises for input it cannot use."""


class EvalInputError(ValueError):
  """Bad evaluation input (a missing or wrongly laid-out folder, an empty split, ...).

  str() is one line meant for the user; `fsjax eval` prints it and exits with status 2.
  """
