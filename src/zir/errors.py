"""The error family every user-facing failure in zir comes from.

A `ZirError` carries a one-line message that names the file, field or name at fault and what was
expected, so the CLI can print it without a traceback.
"""


class ZirError(Exception):
    """Base class of the errors a user can cause (bad names, files, shapes or config values)."""


class UnknownNameError(ZirError, KeyError):
    """A model, objective, dataset or other registered name that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it one readable line
        return str(self.args[0]) if self.args else ""


class ShapeError(ZirError, ValueError):
    """An input tensor whose shape does not fit the model (size, channels, token count)."""


class WeightsError(ZirError, ValueError):
    """A checkpoint that cannot be read or does not fit the model (missing, unexpected, misshaped keys)."""


class ConfigError(ZirError, ValueError):
    """A recipe or override with a bad field or value."""
