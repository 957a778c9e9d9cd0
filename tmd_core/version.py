"""Package version (also recorded in checkpoint provenance)."""

__version__ = "0.1.0"
