"""Deciding whether the stack gets NVIDIA GPU images and device reservations."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable

from difystack.config_model import StackConfig, version_tuple
from difystack.errors import DifystackError

CudaVersion = tuple[int, int]
# Xinference's GPU image is FROM nvidia/cuda:13.x since v3.0.0; v2.12.0 is the last release before.
XINFERENCE_CUDA13_SINCE = (3, 0, 0)
XINFERENCE_LAST_BEFORE_CUDA13 = "v2.12.0"
CUDA_VERSION = re.compile(r"CUDA Version:\s*(\d+)\.(\d+)")


def nvidia_gpu_present() -> bool:
    """True when ``nvidia-smi -L`` lists at least one GPU on this machine."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "GPU" in result.stdout


def driver_cuda_version() -> CudaVersion | None:
    """The newest CUDA the installed driver supports, from the header ``nvidia-smi`` prints."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = CUDA_VERSION.search(result.stdout) if result.returncode == 0 else None
    return (int(match[1]), int(match[2])) if match else None


def localai_cuda_flavour(driver: CudaVersion | None) -> str:
    """LocalAI publishes -gpu-nvidia-cuda-12 and -cuda-13 images: the newest the driver runs."""
    return "cuda-13" if driver is not None and driver >= (13, 0) else "cuda-12"


def check_gpu_driver(config: StackConfig, gpu: bool, driver: CudaVersion | None) -> None:
    """Refuse a GPU stack whose Xinference image needs a newer CUDA than the driver supports."""
    xinference = config.xinference
    if not gpu or not xinference.enabled or xinference.external is not None or "xinference" in config.images:
        return
    if driver is None or driver >= (13, 0):
        return
    if version_tuple(xinference.version.lstrip("v")) < XINFERENCE_CUDA13_SINCE:
        return
    raise DifystackError(
        f"xinference.version: the GPU image of Xinference {xinference.version} needs a driver for "
        f"CUDA >= 13.0, and this machine's NVIDIA driver supports CUDA {driver[0]}.{driver[1]}",
        hint=f"upgrade the NVIDIA driver, set xinference.version: {XINFERENCE_LAST_BEFORE_CUDA13} "
        "(the last release on a CUDA 12 image), or set gpu: none",
    )


def use_gpu(config: StackConfig, detect: Callable[[], bool] = nvidia_gpu_present) -> bool:
    if config.gpu == "auto":
        return detect()
    return config.gpu == "nvidia"
