"""The write frame of the v1 envs: actions and observations relative to the write direction.

Both devices are symmetric under the half turn about x, (m_x, m_y, m_z) -> (m_x, -m_y, -m_z),
with the current reversed: it maps the STT polarizer (+z) and the SOT spin polarization (-y) to
their opposites and leaves the SOT bias field (+x), the anisotropy and the demagnetising field
as they are. Seen in the frame turned so that the target is +z, writing either bit is the same
task (up to the STT resistance, which differs between the parallel and antiparallel states):
the v1 action is the current toward the target, the v1 observation m in that frame. Measured
on SpinTorque-v0 (docs/rl.md): a policy that writes one bit fails every episode of the other,
and a Gaussian policy around 0 (PPO's start) never meets a success, since a success needs a
sustained current of the sign the target asks for and then an action inside the ±0.02 dead
band.
"""
from __future__ import annotations

import numpy as np

from producers.envs.task import OBS_ELAPSED, OBS_ENERGY, OBS_LAST_ACTION, OBS_M, OBS_TARGET

OBS_SIZE = 7
OBS_LOW = np.array([-1, -1, -1, -1, 0, 0, 0], dtype=np.float32)
OBS_HIGH = np.ones(OBS_SIZE, dtype=np.float32)
_TARGET_Z = OBS_TARGET.start + 2


def lab_actions(actions: np.ndarray, target_z: np.ndarray, deadband: float) -> np.ndarray:
    """v1 actions (n,) in [-1, 1] -> the lab-frame actions the task applies (n,): the current
    (a + 1)/2 · j_max toward the target (positive current writes -z, so its sign is
    -target_z), off where that is at most `deadband` of j_max (a ≤ -1 + 2·deadband: the
    bottom of the box, where a clipped or squashed policy saturates). Off is thus an end of
    the range rather than a flat half of it: an agent that follows dQ/da (SAC) gets a
    gradient everywhere but in that sliver. A NaN or infinite action stays non-finite (0·NaN
    is NaN), so the kernel still rejects it with its error naming the copy."""
    toward = (np.asarray(actions, dtype=float) + 1.0) / 2.0  # the kernel clips to j_max
    with np.errstate(invalid="ignore"):
        return -target_z * np.where(toward > deadband, toward, 0.0 * toward)


def turned(m: np.ndarray, direction: np.ndarray, last_action: np.ndarray) -> np.ndarray:
    """Per device in the write frame (n, 5), float32: m turned so that the target is +z
    (m_x, m_y·d, m_z·d: index 2 is m·target), the write direction d (the lab target's z, ±1)
    and the last lab action as current toward the target (≥ 0), from the lab m (n, 3),
    d (n,) and last actions (n,). The columns every v1 observation is made of."""
    out = np.empty((len(m), 5), dtype=np.float32)
    out[:, 0] = m[:, 0]
    out[:, 1] = m[:, 1] * direction
    out[:, 2] = m[:, 2] * direction
    out[:, 3] = direction
    out[:, 4] = np.maximum(-direction * last_action, 0.0)
    return out


def write_frame_obs(lab_obs: np.ndarray) -> np.ndarray:
    """v0 observation rows (n, 9) -> v1 rows (n, 7), float32: the `turned` device columns,
    then the elapsed time and energy fractions as in v0."""
    lab_obs = np.atleast_2d(lab_obs)
    obs = np.empty((len(lab_obs), OBS_SIZE), dtype=np.float32)
    obs[:, :5] = turned(lab_obs[:, OBS_M], lab_obs[:, _TARGET_Z], lab_obs[:, OBS_LAST_ACTION])
    obs[:, 5] = lab_obs[:, OBS_ELAPSED]
    obs[:, 6] = lab_obs[:, OBS_ENERGY]
    return obs
