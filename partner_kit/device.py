"""Which torch device a partner trains and predicts on (`--device auto|cpu|cuda`).

The device is the partner's private business: it lives in the partner's own command line or node config and
never travels with a trunk. On CPU the kit keeps its tuned path (scipy sparse backward, lazy row-wise Adam);
on any other device the same maths runs through torch-native sparse ops (`torch.sparse.mm`, `index_add_`),
so the tensors stay on the device. `cpu-native` is a hidden hook that forces that device-generic path on CPU,
so tests here (no GPU) exercise the code a GPU would run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from data_prep.errors import InputError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEVICE_HELP = "Where to train / predict: auto (CUDA when torch sees a GPU), cpu or cuda"
NATIVE_CPU = "cpu-native"  # test hook: the device-generic (GPU) code path, run on the CPU


def resolve_device(name: str) -> torch.device:
    """The torch device for a `--device` value; `cuda` without a GPU visible to torch is an InputError."""
    import torch  # here: the CLIs must start without importing torch

    value = str(name).strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value in ("cpu", NATIVE_CPU):
        return torch.device("cpu")
    if value == "cuda" or value.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {value}: torch sees no CUDA GPU on this machine "
                             f"(torch {torch.__version__}, torch.cuda.is_available() is False); "
                             "use --device cpu or --device auto")
        device = torch.device(value)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {value}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                             f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return device
    raise InputError(f"--device {name!r} is not one of {', '.join(DEVICE_CHOICES)}")


def uses_native_sparse(name: str, device: torch.device) -> bool:
    """True when the sparse input layer must use torch-native ops (any non-CPU device, or the test hook)."""
    return device.type != "cpu" or str(name).strip().lower() == NATIVE_CPU
