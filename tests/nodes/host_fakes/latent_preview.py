"""Stand-in for ComfyUI's `latent_preview`: `prepare_callback` as with the default `--preview-method none`.

Like the real one it reads `model.model.latent_format` (so a patcher whose module has none fails
here as it would in ComfyUI) and drives a `comfy.utils.ProgressBar(steps)`; previews are None.
"""

import comfy.utils


def prepare_callback(model, steps, x0_output_dict=None):
    model.model.latent_format  # noqa: B018 — the real prepare_callback needs it to pick a previewer
    pbar = comfy.utils.ProgressBar(steps)

    def callback(step, x0, x, total_steps):
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        pbar.update_absolute(step + 1, total_steps, None)

    return callback
