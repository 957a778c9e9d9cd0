"""The toy world's shipped files (tmd_core/toy/assets): paths by name, and the VAE every toy user shares."""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import InputError

ASSETS = Path(__file__).with_name("assets")
NAMES = ("toy_vae", "toy_teacher", "toy_tmd", "toy_dmd2v")  # the VAE, then the three models


def asset(name: str) -> Path:
    """Path of a shipped toy file: "toy_vae", "toy_teacher", "toy_tmd" or "toy_dmd2v"."""
    if name not in NAMES:
        raise InputError(f"unknown toy asset {name!r}: the toy world ships {', '.join(NAMES)}")
    path = ASSETS / f"{name}.safetensors"
    if not path.exists():
        raise InputError(f"the toy file {name} is not installed ({path}): run `tmd toy train --install`")
    return path


@functools.lru_cache(maxsize=4)
def load_vae_cached(path: str):
    from .autoencoder import load_vae

    return load_vae(path)


def default_vae():
    """The shipped toy VAE (loaded once per process)."""
    return load_vae_cached(str(asset("toy_vae")))
