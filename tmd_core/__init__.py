"""tmd_core: Transition Matching Distillation (arXiv:2601.09881) for Wan2.1 video, independent of any host."""

from .checkpoint import load_tmd, read_tmd_info, save_tmd
from .errors import CheckpointError, ConfigError, InputError, NonFiniteError, TMDError
from .loading import describe_checkpoint, detect_checkpoint_kind, load_teacher, teacher_sha256
from .model import BackboneOut, TMDConfig, TMDModel
from .noise import make_noise
from .patch import Patch, apply_patch, extract_patch
from .patch_file import load_patch, load_patched, read_patch_info, save_patch
from .sampler import sample_dmd, sample_teacher, sample_tmd
from .schedule import TMDSchedule, effective_nfe, shifted_grid
from .version import __version__

__all__ = [
    "__version__",
    "BackboneOut",
    "CheckpointError",
    "ConfigError",
    "InputError",
    "NonFiniteError",
    "Patch",
    "TMDConfig",
    "TMDError",
    "TMDModel",
    "TMDSchedule",
    "effective_nfe",
    "apply_patch",
    "extract_patch",
    "load_patch",
    "load_patched",
    "read_patch_info",
    "save_patch",
    "describe_checkpoint",
    "detect_checkpoint_kind",
    "load_teacher",
    "teacher_sha256",
    "load_tmd",
    "make_noise",
    "read_tmd_info",
    "sample_dmd",
    "sample_teacher",
    "sample_tmd",
    "save_tmd",
    "shifted_grid",
]
