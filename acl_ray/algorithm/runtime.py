"""Where and how a process computes: the device, the CPU thread count, mixed precision, memory format."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when visible, else CPU), ``cpu`` or ``cuda``; ``cuda`` without a GPU is an error."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("Illegal run.device='cuda': no CUDA device is visible (use auto or cpu)")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def set_threads(threads: int) -> int:
    """Use ``threads`` CPU threads, or the CPUs this process was given.

    Ray sets ``OMP_NUM_THREADS`` in each worker to its CPU allotment; outside Ray the CPU
    affinity mask is used. Oversubscribing two cores made steps 3-20x slower (DESIGN.md).
    """
    n = threads or int(os.environ.get("OMP_NUM_THREADS", "0")) or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for ``precision`` bf16, or auto on CUDA; a no-op context otherwise (fp32)."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


CHANNELS_LAST_ON_CPU = "ACL_RAY_CHANNELS_LAST_ON_CPU"  # "1": NHWC on the CPU too (tests of the GPU path)


def use_channels_last(requested: bool, device: torch.device) -> bool:
    """NHWC activations when ``run.channels_last`` asks for it: on CUDA (tensor cores want it), and
    on the CPU only when the environment variable ``ACL_RAY_CHANNELS_LAST_ON_CPU=1`` forces it, so
    the suite can run the GPU fast path on a CPU."""
    return requested and (device.type == "cuda" or os.environ.get(CHANNELS_LAST_ON_CPU) == "1")
