"""GPU utilisation straight from NVML (libnvidia-ml.so.1) through ctypes: no extra package.

`utilization_reader()` returns a function giving the mean GPU utilisation (%) over the
machine's GPUs, or None where the library or a GPU is missing — the metric is then absent,
never a made-up 0.
"""
from __future__ import annotations

import ctypes
import ctypes.util


class _Utilization(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


def _load():
    for name in ("libnvidia-ml.so.1", ctypes.util.find_library("nvidia-ml")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def utilization_reader():
    lib = _load()
    if lib is None:
        return None
    try:
        if lib.nvmlInit_v2() != 0:
            return None
        count = ctypes.c_uint(0)
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0 or count.value < 1:
            return None
        handles = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                return None
            handles.append(handle)
    except AttributeError:  # a library without these symbols is not NVML
        return None

    def read() -> float:
        total = 0
        for handle in handles:
            util = _Utilization()
            if lib.nvmlDeviceGetUtilizationRates(handle, ctypes.byref(util)) != 0:
                return float("nan")
            total += util.gpu
        return total / len(handles)

    return read


if __name__ == "__main__":
    reader = utilization_reader()
    print("no NVML GPU" if reader is None else f"gpu_utilization_percent {reader():.1f}")
