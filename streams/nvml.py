"""GPU utilisation from NVML through nvidia-ml-py (pynvml).

`utilization_reader()` returns a function giving the mean GPU utilisation (%) over the
machine's GPUs, or None where the driver library or a GPU is missing — the metric is then
absent, never a made-up 0.
"""
from __future__ import annotations

import pynvml


def utilization_reader():
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError:  # no driver library, no GPU, or a driver/library mismatch
        return None
    if not handles:
        return None

    def read() -> float:
        try:
            return sum(pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles) / len(handles)
        except pynvml.NVMLError:
            return float("nan")

    return read


if __name__ == "__main__":
    reader = utilization_reader()
    print("no NVML GPU" if reader is None else f"gpu_utilization_percent {reader():.1f}")
