"""Stand-in for `comfy.model_management` on a CPU-only host (what `main.py --cpu` gives).

Devices are all CPU; the interrupt flag behaves like the real one (set by `/interrupt`, raised and
cleared by `throw_exception_if_processing_interrupted`); loads and cache flushes are recorded.
"""

import threading

import torch


class InterruptProcessingException(Exception):
    pass


interrupt_processing = False
interrupt_processing_mutex = threading.RLock()
loaded_calls = []  # one list of patchers per load_models_gpu call
soft_empty_cache_calls = 0


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def is_device_cpu(device):
    return getattr(device, "type", device) == "cpu"


def load_models_gpu(
    models, memory_required=0, force_patch_weights=False, minimum_memory_required=None, force_full_load=False
):
    # the real one calls patcher.patch_model(load_device), which moves patcher.model there
    for m in models:
        m.model.to(m.load_device)
    loaded_calls.append(list(models))


def load_model_gpu(model):
    return load_models_gpu([model])


def soft_empty_cache(force=False):
    global soft_empty_cache_calls
    soft_empty_cache_calls += 1


def interrupt_current_processing(value=True):
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted():
    with interrupt_processing_mutex:
        return interrupt_processing


def throw_exception_if_processing_interrupted():
    global interrupt_processing
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException()


def _reset():
    global interrupt_processing, soft_empty_cache_calls
    interrupt_processing = False
    soft_empty_cache_calls = 0
    loaded_calls.clear()
