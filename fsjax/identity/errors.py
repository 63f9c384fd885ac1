"""Errors of the identity converters."""


class ConversionError(ValueError):
  """A conversion failure; str() is one line naming the offending key or node."""
