"""Deciding whether the stack gets NVIDIA GPU images and device reservations."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

from difystack.config_model import StackConfig


def nvidia_gpu_present() -> bool:
    """True when ``nvidia-smi -L`` lists at least one GPU on this machine."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "GPU" in result.stdout


def use_gpu(config: StackConfig, detect: Callable[[], bool] = nvidia_gpu_present) -> bool:
    if config.gpu == "auto":
        return detect()
    return config.gpu == "nvidia"
