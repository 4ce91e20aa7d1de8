"""`SpinTorque-v0` (STT) and `SpinTorqueSOT-v0` (SOT): write one MTJ bit with a current pulse."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from producers.envs import frame, render
from producers.envs.task import EpisodeState, SwitchingTask

MANUAL = """Write one bit of a {title} with as little energy as possible.

    ## Description

    The free layer of a {device_kind} is a macrospin m (unit vector) integrated with the
    Landau–Lifshitz–Gilbert–Slonczewski equation by `physics_ext` ({device!r} parameters,
    thermal field at `temperature`). An episode starts with the bit stored along ±z and asks
    the agent to write the opposite bit: drive m to the target pole with current pulses, then
    switch the current off and leave the bit standing. Each step applies the action's current
    density for one control interval (0.1 ns by default) and integrates the physics inside it.
    {current_note}{device_defaults}

    ## Action Space

    `Box(-1.0, 1.0, (1,), float32)`: the current density as a fraction of `j_max` (A/m^2).
    Positive current drives m from +z toward −z. Actions with |a| ≤ `action_deadband` switch
    the current off (exactly 0 A/m^2).

    v1 (`write_frame=True`): the same box in the write frame: a is the current
    (a + 1)/2 · j_max toward the target, whichever bit is written, off where that is at most
    `action_deadband` of j_max (a ≤ −0.96 by default: the bottom of the box, where a clipped
    Gaussian or a tanh-squashed policy saturates).

    ## Observation Space

    `Box(low, high, (9,), float32)`:

    | Num | Observation                          | Min  | Max | Unit                        |
    |-----|--------------------------------------|------|-----|-----------------------------|
    | 0   | m_x, free-layer magnetisation        | -1   | 1   | 1 (unit vector)             |
    | 1   | m_y                                  | -1   | 1   | 1                           |
    | 2   | m_z                                  | -1   | 1   | 1                           |
    | 3   | target_x (always 0)                  | -1   | 1   | 1                           |
    | 4   | target_y (always 0)                  | -1   | 1   | 1                           |
    | 5   | target_z (±1, the bit to write)      | -1   | 1   | 1                           |
    | 6   | last action                          | -1   | 1   | fraction of `j_max`         |
    | 7   | elapsed fraction of the time budget  | 0    | 1   | 1                           |
    | 8   | energy used so far                   | 0    | 1   | E_budget (see Rewards)      |

    v1 (`write_frame=True`): `Box(low, high, (7,), float32)`, m in the frame turned half a turn
    about x when the target is +z, so that the target is always +z (both devices are symmetric
    under that turn with the current reversed; `producers/envs/frame.py`):

    | Num | Observation                                   | Min | Max | Unit                  |
    |-----|-----------------------------------------------|-----|-----|-----------------------|
    | 0   | m_x                                           | -1  | 1   | 1                     |
    | 1   | m_y · target_z                                | -1  | 1   | 1                     |
    | 2   | m_z · target_z = m·target                     | -1  | 1   | 1                     |
    | 3   | target_z, the write direction (±1)            | -1  | 1   | 1                     |
    | 4   | last current toward the target                | 0   | 1   | fraction of `j_max`   |
    | 5   | elapsed fraction of the time budget           | 0   | 1   | 1                     |
    | 6   | energy used so far                            | 0   | 1   | E_budget              |

    ## Rewards

    Per step: `success_bonus` on the step that ends in success, minus
    `energy_weight · ΔE / E_budget` (ΔE: the Joule energy of the step, J; E_budget: the energy
    of `j_max` applied for the whole time budget at the current path's highest resistance, so
    the energy used is at most E_budget), minus
    `time_weight · control_interval / time_budget`. An episode that spends the whole budget at
    full current without writing scores about −(energy_weight + time_weight).

    ## Starting State

    m is tilted from the stored pole by a polar angle drawn from the thermal equilibrium
    p(θ) ∝ sin θ exp(−Δ sin²θ), Δ the device's thermal stability at `temperature`
    ({zero_kelvin_tilt} rad at 0 K), with a uniform azimuth. The stored pole is +z or −z at
    random (`write_direction="random"`), or +z ("down": write −z) or −z ("up": write +z).

    ## Episode End

    - Termination (success): the current was off for the whole step and m·target ≥
      `success_threshold` at its end — the bit is written and stable without drive.
    - Truncation: the time budget is spent without success (never reported as termination).

    `info` always has `energy_j` (J, episode so far), `switching_time_s` (s from the episode
    start to the first crossing of m·target through 0, or None), `success` (bool) and
    `sim_steps` (integrator steps so far).

    ## Arguments

    | Parameter           | Type          | Default        | Description                                |
    |---------------------|---------------|----------------|--------------------------------------------|
    | `device_params`     | dict or None  | None           | overrides for `physics_ext.make_params`{device_params_note} |
    | `j_max`             | float or None | None           | A/m^2 at action 1; None: `j_max_factor`·jc0 |
    | `j_max_factor`      | float         | {j_max_factor}            | `j_max` in units of the device's jc0       |
    | `control_interval`  | float         | 1e-10          | s per step                                 |
    | `time_budget`       | float         | {time_budget}          | s per episode                              |
    | `dt`                | float         | 1e-12          | integrator time step, s                    |
    | `method`            | str           | "heun"         | integrator ("heun" or "rk4")               |
    | `temperature`       | float         | 300.0          | K                                          |
    | `success_threshold` | float         | 0.9            | m·target needed for success                |
    | `action_deadband`   | float         | 0.02           | |a| at or below which the current is off   |
    | `success_bonus`     | float         | 1.0            | reward on success                          |
    | `energy_weight`     | float         | 1.0            | weight of the energy cost                  |
    | `time_weight`       | float         | 0.1            | weight of the time cost                    |
    | `write_direction`   | str           | "random"       | "random", "down" or "up"                   |
    | `write_frame`       | bool          | False          | v1 action and observation (True in -v1)    |
    | `render_mode`       | str or None   | None           | "rgb_array": the trajectory as an image    |

    ## Vectorized environment

    `gymnasium.make_vec("{env_id}", num_envs=64, vectorization_mode="vector_entry_point")`
    gives the native `SpinTorqueVectorEnv`: every copy advances in one batched integrator call
    per step, autoreset mode NEXT_STEP, each copy seeded from its own seed stream.

    ## Version History

    - v0: initial version.{version_note}
    - v1: `write_frame=True` and `energy_weight=3.0` (the physics and episode ends unchanged;
      reproduce with `gym.make("SpinTorque-v0", write_frame=True, energy_weight=3.0)`). Measured on
      v0 (docs/rl.md): a Gaussian policy around 0 — where PPO and SAC start — switched 0 of
      4,000 episodes (a success needs a sustained current of the sign the target asks for,
      then an action inside the ±0.02 dead band, 1.6 % of its draws), and a policy that writes
      one bit fails every episode of the other; SB3 PPO stalled at 54.7 % (one direction).
      In v1 the current toward the target is the same action for both bits, and off is the
      bottom end of the box (a flat "off" half of the box was tried: SAC, which follows
      dQ/da, settled in it and never switched). The energy weight makes the energy of a
      full-current write (~0.2 E_budget) cost ~0.6 of the success bonus, so that saving it
      pays: SB3 PPO (producers/trainers/hyperparams.yml, 400k steps) wrote 100 % of 500
      episodes at 119 fJ with weight 1 and at 93 fJ with weight 3.

    ## Example

    >>> import gymnasium as gym
    >>> import producers
    >>> env = gym.make("{env_id}", temperature=0.0, write_direction="down")
    >>> obs, info = env.reset(seed=1)
    >>> obs.shape, obs.dtype
    ((9,), dtype('float32'))
{example}
    """


STT_EXAMPLE = """    >>> for _ in range(40):
    ...     obs, reward, terminated, truncated, info = env.step(np.array([1.0], dtype=np.float32))
    >>> bool(obs[2] < -0.9)
    True
    >>> obs, reward, terminated, truncated, info = env.step(np.array([0.0], dtype=np.float32))
    >>> terminated, info["success"]
    (True, True)"""
SOT_EXAMPLE = """    >>> obs, reward, terminated, truncated, info = env.step(np.array([1.0], dtype=np.float32))
    >>> sorted(info)
    ['energy_j', 'sim_steps', 'success', 'switching_time_s']
    >>> info["sim_steps"]
    100"""


# The device's own default has no field-like torque; with it the current-driven fixed point
# stays near the equator, and m precesses across it after any turn-off: ~50 % switching for
# every pulse. A field-like torque of half the damping-like one (this code's sign) moves that
# fixed point into the target hemisphere as the current ramps down, so a ramped pulse switches
# deterministically (physics_ext/device.py docstring: 2000/2000 at 300 K).
SOT_DEVICE_DEFAULTS = {"field_like": 0.5}
SOT_DEVICE_NOTE = """

    The device has a field-like torque of half the damping-like one (`field_like=0.5`,
    H_FL = +0.5·H_DL along p; `physics_ext`'s own `sot-pma` default is 0): heavy-metal/CoFeB
    stacks have field-like to damping-like ratios of about 0.5–3 (Garello et al., Nat.
    Nanotech. 8, 587 (2013)). With it, a pulse that ramps down to zero over ≳ 0.5 ns, or a
    moderate current (≈ jc0) switched off once m·target ≥ 0.9, writes the bit; an abrupt
    turn-off from full current leaves the bit to the phase of the free precession (~50 %). `device_params={"field_like": 0.0}` gives the bare device."""
SOT_VERSION_NOTE = """
    - v0, revised: the device defaults to `field_like=0.5` (realistic for heavy-metal/CoFeB;
      Garello et al. 2013). Without a field-like torque the bit switched with ~50 % probability
      for every pulse shape tried, so the task was not learnable."""


class SpinTorqueEnv(gym.Env):
    __doc__ = MANUAL.format(
        title="spin-transfer-torque (STT) perpendicular MTJ",
        device_kind="perpendicular magnetic tunnel junction",
        device="stt-pma",
        current_note="The current flows through the junction (Joule energy in its resistance, "
        "which depends on the state through the TMR).",
        zero_kelvin_tilt="0.02", j_max_factor="5.0", time_budget="1e-08",
        env_id="SpinTorque-v0", example=STT_EXAMPLE, device_defaults="",
        device_params_note="   ", version_note="",
    )

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    device = "stt-pma"
    default_device_params: dict = {}  # under the caller's device_params
    default_j_max_factor = 5.0
    default_time_budget = 1e-8

    def __init__(
        self,
        device_params: dict | None = None,
        j_max: float | None = None,
        j_max_factor: float | None = None,
        control_interval: float = 1e-10,
        time_budget: float | None = None,
        dt: float = 1e-12,
        method: str = "heun",
        temperature: float = 300.0,
        success_threshold: float = 0.9,
        action_deadband: float = 0.02,
        success_bonus: float = 1.0,
        energy_weight: float = 1.0,
        time_weight: float = 0.1,
        write_direction: str = "random",
        write_frame: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.task = SwitchingTask.create(
            self.device, {**self.default_device_params, **(device_params or {})}, j_max,
            self.default_j_max_factor if j_max_factor is None else j_max_factor,
            control_interval, self.default_time_budget if time_budget is None else time_budget,
            dt, method, temperature, success_threshold, action_deadband, success_bonus,
            energy_weight, time_weight, write_direction,
        )
        self.render_mode = render_mode
        self.write_frame = write_frame
        self.action_space = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        low, high = (
            (frame.OBS_LOW, frame.OBS_HIGH) if write_frame else self.task.observation_bounds()
        )
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.state: EpisodeState | None = None
        self._history: list[tuple[float, np.ndarray, float]] = []

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        uniforms, seeds = self.task.episode_draws([self.np_random])
        self.state = self.task.new_state(uniforms)
        self._episode = self.task.episode(self.state, seeds[0])
        self._history = [(0.0, self.state.m[0].copy(), 0.0)]
        obs = self._episode.first_observation()
        return self._observation(obs), self._episode.info(0, False)

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        if type(action) is np.ndarray:
            action = action.item(0)
        elif np.ndim(action):
            action = np.ravel(action)[0]
        if self.write_frame:
            action = float(frame.lab_actions(action, self.state.target[0, 2],
                                             self.task.action_deadband))
        result = self._episode.step_env(action)
        if self.render_mode is not None:
            self._history.append(
                (float(self.state.elapsed_s[0]), self.state.m[0].copy(), float(action))
            )
        if self.write_frame:
            return (self._observation(result[0]),) + result[1:]
        return result

    def _observation(self, lab_obs: np.ndarray) -> np.ndarray:
        return frame.write_frame_obs(lab_obs)[0] if self.write_frame else lab_obs

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() needs render_mode='rgb_array'")
            return None
        return render.trajectory_image(self._history, self.task.j_max)


class SpinTorqueSOTEnv(SpinTorqueEnv):
    __doc__ = MANUAL.format(
        title="spin-orbit-torque (SOT) perpendicular MTJ",
        device_kind="three-terminal SOT junction (heavy-metal write line under the free "
        "layer, in-plane bias field for deterministic switching)",
        device="sot-pma",
        current_note="The write current flows in the heavy-metal line, not through the tunnel "
        "barrier (Joule energy in the line's resistance).",
        zero_kelvin_tilt="0.02", j_max_factor="2.0", time_budget="1e-08",
        env_id="SpinTorqueSOT-v0", example=SOT_EXAMPLE, device_defaults=SOT_DEVICE_NOTE,
        device_params_note="; on top of `field_like=0.5`", version_note=SOT_VERSION_NOTE,
    )

    device = "sot-pma"
    default_j_max_factor = 2.0
    default_device_params = SOT_DEVICE_DEFAULTS
