"""The one adapter between ComfyUI's types and tmd_core's: folders, latents, conditioning, progress."""

from __future__ import annotations

import logging
import os

import comfy.latent_formats
import comfy.model_management
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..tmd_core.errors import InputError
from ..tmd_core.loading import describe_checkpoint, not_a_teacher
from ..tmd_core.toy.shipped import ASSETS as TOY_ASSETS
from ..tmd_core.training.runlog import loss_line
from ..tmd_core.worlds import is_wan21

log = logging.getLogger("tmd")

TMD_FOLDER = "tmd"
TEACHER_FOLDER = "diffusion_models"
TOY_PREFIX = "toy/"  # the toy checkpoints shipped in tmd_core/toy/assets, listed as toy/<file>
RUNS_FOLDER = "tmd_runs"  # TMDDistill's run folders (data, logs, resumable state), under ComfyUI's output folder

# the pack's own socket types (V3 schema): a TMD model in a ModelPatcher, a tmd_core.TMDSchedule
TMD_MODEL = io.Custom("TMD_MODEL")
TMD_SCHEDULE = io.Custom("TMD_SCHEDULE")


def check_menus(node: type[io.ComfyNode], **values) -> bool | str:
    """ComfyUI's POST-time menu check for a V3 node's combos, as its `validate_inputs` (ComfyUI 0.3.64 checks
    only V1 combos, a V3 combo's value would reach the node unchecked): True, or the V1 message for the first
    value that is not in its menu. Absent or linked values (None here) pass."""
    menus = {i.id: i.options for i in node.define_schema().inputs if isinstance(i, io.Combo.Input)}
    for name, value in values.items():
        options = menus[name]
        if value is not None and value not in options:
            listed = f"(list of length {len(options)})" if len(options) > 20 else str(options)
            return f"{name}: '{value}' not in {listed}"
    return True


def register_model_folder() -> None:
    """models/tmd, added (not replacing) so paths from extra_model_paths.yaml stay."""
    folder_paths.add_model_folder_path(TMD_FOLDER, os.path.join(folder_paths.models_dir, TMD_FOLDER))


def checkpoint_choices() -> list[str]:
    """TMD checkpoints, then the shipped toy models (`toy/...`), then Wan teachers from diffusion_models
    (prefixed so names never clash)."""
    tmd = folder_paths.get_filename_list(TMD_FOLDER)
    toy = [n for n in toy_choices() if n not in tmd]
    teachers = [f"{TEACHER_FOLDER}/{n}" for n in folder_paths.get_filename_list(TEACHER_FOLDER)]
    return [n for n in tmd + toy + teachers if n.endswith(".safetensors")]


def toy_choices(kind: str | None = None) -> list[str]:
    """`toy/<file>` for each toy checkpoint shipped in tmd_core/toy/assets; `kind="teacher"` keeps plain Wan files."""
    names = sorted(p.name for p in TOY_ASSETS.glob("*.safetensors")) if TOY_ASSETS.is_dir() else []
    names = [n for n in names if n != "toy_vae.safetensors"]  # the toy VAE is used by TMDToyDecode, not a model
    if kind == "teacher":  # teachers only: no TMD student or patch, no DMD2-v student
        names = [n for n in names if not_a_teacher(describe_checkpoint(TOY_ASSETS / n)) is None]
    return [f"{TOY_PREFIX}{n}" for n in names]


def teacher_choices() -> list[str]:
    """Wan teachers for TMDDistill: diffusion_models files (as UNETLoader lists them), then toy teachers."""
    teachers = [n for n in folder_paths.get_filename_list(TEACHER_FOLDER) if n.endswith(".safetensors")]
    return teachers + [n for n in toy_choices("teacher") if n not in teachers]


def _check_inside(name: str, folder: str) -> str:
    if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        raise InputError(f"{name!r} points outside the {folder} model folder: pick a file listed in the menu")
    return name


def toy_vae() -> str:
    """The shipped toy VAE (what TMDToyDecode decodes with)."""
    path = TOY_ASSETS / "toy_vae.safetensors"
    if not path.is_file():
        raise InputError(f"the toy VAE is not installed ({path}): reinstall the pack or run `tmd toy train --install`")
    return str(path)


def _toy_asset(rel: str) -> str | None:
    """A shipped toy checkpoint for `toy/<file>` (files in the model folder of the same name win)."""
    if not rel.startswith(TOY_PREFIX):
        return None
    path = TOY_ASSETS / rel[len(TOY_PREFIX) :]
    return str(path) if path.is_file() else None


def resolve_checkpoint(name: str) -> str:
    """Full path of a listed checkpoint; names that escape their model folder are refused."""
    folder, rel = (TEACHER_FOLDER, name[len(TEACHER_FOLDER) + 1 :]) if name.startswith(TEACHER_FOLDER + "/") else (TMD_FOLDER, name)
    _check_inside(rel, folder)
    path = folder_paths.get_full_path(folder, rel) or (_toy_asset(rel) if folder == TMD_FOLDER else None)
    if path is None:
        raise InputError(f"{name!r} not found in the {folder} model folders {folder_paths.get_folder_paths(folder)}")
    return path


def resolve_teacher(name: str) -> str:
    """Full path of a teacher listed by `teacher_choices`."""
    path = folder_paths.get_full_path(TEACHER_FOLDER, _check_inside(name, TEACHER_FOLDER)) or _toy_asset(name)
    if path is None:
        raise InputError(f"teacher {name!r} not found in the {TEACHER_FOLDER} model folders "
                         f"{folder_paths.get_folder_paths(TEACHER_FOLDER)}")
    return path


def wrap_model(model: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """Put a TMDModel under ComfyUI's memory management (loaded/offloaded like native models)."""
    # Wan2.1 latents carry the VAE's mean/std; toy latents (16 channels too, but 32-wide toy text) are already
    # normalised by the toy VAE and pass the sampler unchanged (TMDToyDecode knows their statistics)
    model.latent_format = comfy.latent_formats.Wan21() if is_wan21(model) else None
    return comfy.model_patcher.ModelPatcher(
        model, load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def load_to_device(patcher) -> torch.device:
    comfy.model_management.load_models_gpu([patcher])
    return patcher.load_device


def context_from_conditioning(conditioning) -> torch.Tensor:
    """CONDITIONING [[Tensor[B, L, D], {...}], ...] -> Tensor[B, L, D] (the first entry; Wan uses one)."""
    if not conditioning or not isinstance(conditioning[0], (list, tuple)) or not torch.is_tensor(conditioning[0][0]):
        raise InputError("positive must be a CONDITIONING from a text encoder node (e.g. CLIPTextEncode)")
    if len(conditioning) > 1:
        log.warning("TMD: %d conditioning entries given; TMD uses the first (no area/timestep combining)", len(conditioning))
    return conditioning[0][0].float()


def denormalise_latent(x: torch.Tensor, model) -> torch.Tensor:
    """Model space -> raw VAE space: x * std + mean with the model's latent format (what VAEDecode expects);
    a model without one (the toy world) passes x through."""
    fmt = getattr(model, "latent_format", None)
    if fmt is None:
        return x
    return x * fmt.latents_std.to(x.device, x.dtype) + fmt.latents_mean.to(x.device, x.dtype)


def wan21_raw(x: torch.Tensor) -> torch.Tensor:
    """Normalised Wan2.1 latents -> raw VAE space (x * std + mean), what a ComfyUI VAE decodes."""
    fmt = comfy.latent_formats.Wan21()
    return x * fmt.latents_std.to(x.device, x.dtype) + fmt.latents_mean.to(x.device, x.dtype)


def sampling_callback(patcher, total: int, inner_steps: int):
    """tmd_core callback -> ComfyUI progress bar, latent preview and interrupt."""
    previewer = None
    if getattr(patcher.model, "latent_format", None) is not None:
        import latent_preview

        previewer = latent_preview.prepare_callback(patcher, total)
    pbar = None if previewer else comfy.utils.ProgressBar(total)

    def callback(i: int, j: int, x0: torch.Tensor) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        step = i * inner_steps + j
        if previewer is not None:
            previewer(step, x0, None, total)
        else:
            pbar.update_absolute(step + 1, total)

    return callback


def output_device() -> torch.device:
    return comfy.model_management.intermediate_device()


# ---------------------------------------------------------------- training (TMDDistill)


def training_mode():
    """Autograd on: ComfyUI runs nodes under torch.inference_mode, whose tensors cannot be trained or saved for backward."""
    return torch.inference_mode(False)


def encode_texts(clip, texts: list[str]) -> list[torch.Tensor]:
    """One Tensor[L, D] per text, encoded as CLIPTextEncode does (Wan: umt5, zero-padded to 512 tokens)."""
    return [context_from_conditioning(clip.encode_from_tokens_scheduled(clip.tokenize(t)))[0] for t in texts]


def user_path(path: str, base: str) -> str:
    """An absolute path, or one relative to ComfyUI's `base` folder ("input" or "output")."""
    root = folder_paths.get_input_directory() if base == "input" else folder_paths.get_output_directory()
    return os.path.join(root, os.path.expanduser(path.strip()))


def output_directory() -> str:
    return folder_paths.get_output_directory()


def run_folder(name: str) -> str:
    return os.path.join(folder_paths.get_output_directory(), RUNS_FOLDER, name)


def tmd_target(name: str) -> str:
    """Where a distilled student goes: the first `tmd` model folder (models/tmd unless extra_model_paths.yaml says)."""
    return os.path.join(folder_paths.get_folder_paths(TMD_FOLDER)[0], f"{name}.safetensors")


def show_text(node_id: str | None, text: str) -> None:
    """Live text on a running node in the frontend (what API nodes use); nothing without a server."""
    import server

    if node_id is not None and server.PromptServer.instance is not None:
        server.PromptServer.instance.send_progress_text(text, node_id)


class TrainingProgress:
    """Training progress -> one progress bar over data + stages; the host's interrupt flag -> `should_stop`.

    A ProgressBar update raises when the flag is set (ComfyUI's hook does); the bar is not updated then,
    so the flag stays set until the loop has polled `should_stop` and saved a resumable state.
    """

    def __init__(self, totals: dict[str, int], node_id: str | None = None):
        self.offsets, total = {}, 0
        for phase, n in totals.items():
            self.offsets[phase], total = total, total + n
        self.bar = comfy.utils.ProgressBar(total)
        self.node_id = node_id

    def __call__(self, phase: str, done: int, total: int, logs: dict) -> None:
        if comfy.model_management.processing_interrupted() or logs.get("event") == "validation":
            return  # a validation record repeats the step just reported (the previews show themselves)
        if phase == "data":
            show_text(self.node_id, f"teacher samples {done}/{total}")
        elif any("loss" in k for k in logs):
            show_text(self.node_id, loss_line(logs, total))
        try:
            self.bar.update_absolute(self.offsets[phase] + done)
        except comfy.model_management.InterruptProcessingException:
            comfy.model_management.interrupt_current_processing(True)  # the hook consumed the flag: keep it

    def show_image(self, image, max_size: int) -> None:
        """A PIL image on the node while it runs: ComfyUI's progress-bar preview (sent as a JPEG, longest side
        at most `max_size`), at the bar's current value."""
        if comfy.model_management.processing_interrupted():
            return
        try:
            self.bar.update_absolute(self.bar.current, preview=("JPEG", image, max_size))
        except comfy.model_management.InterruptProcessingException:
            comfy.model_management.interrupt_current_processing(True)  # keep the flag for should_stop

    @staticmethod
    def should_stop() -> bool:
        return comfy.model_management.processing_interrupted()

    @staticmethod
    def raise_interrupted():
        """After a stopped run: end the node as interrupted (clears the flag, as ComfyUI's own checks do)."""
        comfy.model_management.throw_exception_if_processing_interrupted()
        raise comfy.model_management.InterruptProcessingException()


NO_TEACHER = "none"


def teacher_for_training(model, name: str | None):
    """(teacher module, file path or "") from a connected MODEL, else from `name`. Call inside `training_mode()`."""
    from ..tmd_core.loading import load_teacher
    from .teacher_model import teacher_from_model

    if model is not None:  # its LoRAs applied, sharing ComfyUI's memory where they change nothing
        return teacher_from_model(model), ""
    if not name or name == NO_TEACHER:
        raise InputError("no teacher: connect a Wan2.1 MODEL (UNETLoader) to `teacher`, or pick a `teacher_name`")
    path = resolve_teacher(name)
    return load_teacher(path), path


def training_device() -> str:
    """"cpu" on a CPU host (--cpu), else "auto" (Accelerate picks the GPU)."""
    return "cpu" if comfy.model_management.get_torch_device().type == "cpu" else "auto"


def images_from_clips(clips: torch.Tensor, scale: int = 1) -> torch.Tensor:
    """Clips Tensor[B, 3, F, H, W] in [-1, 1] -> IMAGE Tensor[B*F, H*scale, W*scale, 3] in [0, 1] (nearest upscale)."""
    b, c, f, h, w = clips.shape
    frames = clips.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    if scale > 1:
        frames = torch.nn.functional.interpolate(frames, scale_factor=scale, mode="nearest")
    return ((frames + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).contiguous().to(output_device())
