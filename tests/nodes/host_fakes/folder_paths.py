"""Stand-in for ComfyUI's `folder_paths`, rooted in a per-test temporary folder (see `_reset`).

Model folders, file lists (recursive, relative, extension-filtered; an empty extension set lists
every file), full-path lookup and the output/temp/input folders behave as in ComfyUI 0.3.64.
"""

import os

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
base_path = ""
models_dir = ""
output_directory = ""
temp_directory = ""
input_directory = ""
folder_names_and_paths = {}
_LEGACY = {"unet": "diffusion_models", "clip": "text_encoders"}
_MODEL_FOLDERS = {  # name -> sub-folders of models_dir
    "checkpoints": ["checkpoints"],
    "loras": ["loras"],
    "vae": ["vae"],
    "text_encoders": ["text_encoders", "clip"],
    "diffusion_models": ["unet", "diffusion_models"],
}


def map_legacy(folder_name):
    return _LEGACY.get(folder_name, folder_name)


def add_model_folder_path(folder_name, full_folder_path, is_default=False):
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())
        return
    paths = folder_names_and_paths[folder_name][0]
    if full_folder_path in paths:
        if is_default and paths[0] != full_folder_path:
            paths.remove(full_folder_path)
            paths.insert(0, full_folder_path)
    elif is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def get_folder_paths(folder_name):
    return folder_names_and_paths[map_legacy(folder_name)][0][:]


def get_filename_list(folder_name):
    folders, extensions = folder_names_and_paths[map_legacy(folder_name)]
    found = set()
    for root in folders:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for name in filenames:
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                if not extensions or os.path.splitext(rel)[-1].lower() in extensions:
                    found.add(rel)
    return sorted(found)


def get_full_path(folder_name, filename):
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for root in folder_names_and_paths[folder_name][0]:
        full_path = os.path.join(root, filename)
        if os.path.isfile(full_path):
            return full_path
    return None


def get_full_path_or_raise(folder_name, filename):
    full_path = get_full_path(folder_name, filename)
    if full_path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full_path


def get_output_directory():
    return output_directory


def get_temp_directory():
    return temp_directory


def get_input_directory():
    return input_directory


def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
    """(full_output_folder, filename, counter, subfolder, filename_prefix); counter follows existing `name_NNNNN_` files."""
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
    counter = 1
    os.makedirs(full_output_folder, exist_ok=True)  # as the real one does for a new sub-folder
    for f in os.listdir(full_output_folder):
        head, _, rest = f.partition(filename + "_")
        digits = rest.split("_")[0]
        if head == "" and digits.isdigit():
            counter = max(counter, int(digits) + 1)
    return full_output_folder, filename, counter, subfolder, filename_prefix


def _reset(root):
    """Point every folder at `root` (models/, output/, temp/, input/) and forget added model folders."""
    global base_path, models_dir, output_directory, temp_directory, input_directory
    base_path = str(root)
    models_dir = os.path.join(base_path, "models")
    output_directory = os.path.join(base_path, "output")
    temp_directory = os.path.join(base_path, "temp")
    input_directory = os.path.join(base_path, "input")
    for d in (output_directory, temp_directory, input_directory):
        os.makedirs(d, exist_ok=True)
    folder_names_and_paths.clear()
    for name, subs in _MODEL_FOLDERS.items():
        folder_names_and_paths[name] = (
            [os.path.join(models_dir, s) for s in subs],
            set(supported_pt_extensions),
        )
