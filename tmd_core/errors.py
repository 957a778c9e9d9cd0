"""Exceptions raised for user-reachable failures (bad files, bad inputs, bad settings).

Every message says what was wrong, what was expected and what to do about it.
"""


class TMDError(Exception):
    """Base class of every error this library raises on purpose."""


class CheckpointError(TMDError, ValueError):
    """A file is not a loadable Wan/TMD checkpoint (wrong kind, unknown format, corrupt)."""


class InputError(TMDError, ValueError):
    """A tensor or setting handed to the library does not fit the model or the method."""


class ConfigError(TMDError, ValueError):
    """A training/sampling configuration is invalid (unknown key, impossible combination)."""
