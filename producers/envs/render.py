"""Pictures of a magnetisation trajectory (matplotlib, Agg backend, no display needed)."""
from __future__ import annotations

import numpy as np


def trajectory_image(
    history: list[tuple[float, np.ndarray, np.ndarray | float]], j_max: float
) -> np.ndarray:
    """An RGB image (H, W, 3) uint8: m_x, m_y, m_z per device against time (ns), the applied
    current (fraction of j_max) underneath. `history` holds (time_s, m (3,) or (N, 3), action)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("render_mode='rgb_array' needs matplotlib: pip install matplotlib") from error

    times_ns = np.array([t for t, _, _ in history]) * 1e9
    m = np.array([np.atleast_2d(m) for _, m, _ in history])  # (T, N, 3)
    actions = np.array([np.atleast_1d(a) for _, _, a in history])  # (T, N)
    figure = Figure(figsize=(6.4, 4.0), dpi=80)
    canvas = FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for device in range(m.shape[1]):
        for axis, colour in zip(range(3), ("tab:red", "tab:green", "tab:blue")):
            label = "m" + "xyz"[axis] if device == 0 else None
            top.plot(times_ns, m[:, device, axis], color=colour, lw=1, label=label)
        bottom.step(times_ns, actions[:, device], where="pre", lw=1)
    top.set_ylim(-1.05, 1.05)
    top.set_ylabel("m")
    top.legend(loc="upper right", fontsize="small")
    bottom.set_ylim(-1.05, 1.05)
    bottom.set_ylabel(f"J / {j_max:.2g}")
    bottom.set_xlabel("time (ns)")
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
