"""Exceptions raised for user-reachable failures (bad files, bad inputs, bad settings, non-finite results).

Every message says what was wrong, what was expected and what to do about it (docs/errors.md lists them).
"""


class TMDError(Exception):
    """Base class of every error this library raises on purpose."""


class CheckpointError(TMDError, ValueError):
    """A file is not a loadable Wan/TMD checkpoint (wrong kind, unknown format, corrupt)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path that does not exist (also a FileNotFoundError, as it was before it was a TMDError)."""


class InputError(TMDError, ValueError):
    """A tensor or setting handed to the library does not fit the model or the method."""


class ConfigError(TMDError, ValueError):
    """A training/sampling configuration is invalid (unknown key, impossible combination)."""


class NonFiniteError(TMDError, ArithmeticError):
    """A computation produced NaN or inf: the result is refused instead of being saved (the message says where)."""
