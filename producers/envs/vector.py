"""The native vector env: `num_envs` copies of a single-device env in one batched integrator call."""
from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from producers.envs import frame
from producers.envs.spin_torque import SpinTorqueEnv, SpinTorqueSOTEnv
from producers.envs.task import EpisodeState
from producers.envs.threads import ThreadChooser


class SpinTorqueVectorEnv(VectorEnv):
    """`num_envs` independent copies of `SpinTorque-v0` (or of `SpinTorqueSOT-v0` with
    `device_env=SpinTorqueSOTEnv`; the -v1 ids with `write_frame=True`), advanced together by one call of the compiled interval
    kernel per step (the physics core's integrator, copies in parallel on `threads` OpenMP
    threads; default None: one thread or all cores — once a step's integrator work pays for
    waking them — whichever its steps measure faster, see `ThreadChooser`). Same spaces,
    rewards and episode ends as the single env (it shares its task); the results do not
    depend on the thread count.

    Autoreset mode NEXT_STEP (default): the step after a copy's episode ended resets that copy
    (its action is ignored, reward 0, not terminated/truncated) and returns its first
    observation. `autoreset_mode=AutoresetMode.SAME_STEP` resets it in the step that ended
    it, as stable-baselines3 expects: that step returns its first observation, the final one
    is in `infos["final_obs"]` (rows masked by `infos["_final_obs"]`).
    Each copy draws its start states and integrator seeds from its own generator, spawned
    from the `reset(seed=...)` seed, so copy i's episodes are the same whatever the other
    copies do and however many autoresets came before.

    `infos` holds, for copies whose episode ended this step, `energy_j`, `switching_time_s`
    (NaN if none), `success` and `sim_steps`, each with its `_name` mask (gymnasium layout).

    >>> import gymnasium as gym, numpy as np, producers
    >>> envs = gym.make_vec("SpinTorque-v0", num_envs=4, vectorization_mode="vector_entry_point")
    >>> obs, infos = envs.reset(seed=0)
    >>> obs.shape
    (4, 9)
    >>> obs, rewards, terminated, truncated, infos = envs.step(np.ones((4, 1), np.float32))
    >>> rewards.dtype, terminated.shape
    (dtype('float64'), (4,))
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, device_env: type = SpinTorqueEnv,
                 threads: int | None = None,
                 autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP,
                 **env_kwargs) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if autoreset_mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset_mode must be NEXT_STEP or SAME_STEP, got {autoreset_mode}")
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        template = device_env(**env_kwargs)
        self.task = template.task
        self.write_frame = template.write_frame
        self.num_envs = num_envs
        self.threads = threads
        self._chooser = ThreadChooser(self.task.parallel_threads(num_envs))
        self.single_action_space = template.action_space
        self.single_observation_space = template.observation_space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.render_mode = None
        self.state: EpisodeState | None = None
        self._copy_rngs: list[np.random.Generator] = []
        self._ended = np.zeros(num_envs, dtype=bool)
        self._ended_flags = self._ended.view(np.int8)  # the kernel's view of it
        self._ended_count = 0

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        if isinstance(seed, (list, tuple)):
            if len(seed) != self.num_envs:
                raise ValueError(f"{len(seed)} seeds for {self.num_envs} copies")
            self._copy_rngs = [np.random.default_rng(s) for s in seed]
        elif seed is not None or not self._copy_rngs:
            children = np.random.SeedSequence(seed).spawn(self.num_envs)
            self._copy_rngs = [np.random.default_rng(child) for child in children]
        uniforms, self._step_seeds = self.task.episode_draws(self._copy_rngs)
        self.state = self.task.new_state(uniforms)
        self._ended[:] = False
        self._ended_count = 0
        return self._observations(self.state.observe(self.task)), {}

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=float).reshape(self.num_envs)
        state = self.state
        if self._ended_count:
            self._restart_ended()
        if self.write_frame:
            actions = frame.lab_actions(actions, state.target[:, 2], self.task.action_deadband)
        copies, par = state.compiled(self.task), self.task.packed_row

        def advance(threads: int) -> tuple:
            return copies.step_vector(par, actions, self._step_seeds, self._ended_flags, threads)

        obs, rewards, terminated, truncated, self._ended_count = (
            advance(self.threads) if self.threads else self._chooser.run(advance)
        )
        infos = self._final_infos(self._ended, terminated) if self._ended_count else {}
        obs = self._observations(obs)
        if self._ended_count and self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP:
            ended = self._ended.copy()
            infos["final_obs"], infos["_final_obs"] = obs.copy(), ended
            self._restart_ended()
            obs[ended] = self._observations(self.state.observe(self.task))[ended]
            self._ended[:] = False
            self._ended_count = 0
        return obs, rewards, terminated, truncated, infos

    def _restart_ended(self) -> None:
        """New episodes in the copies whose episode ended (each from its own generator)."""
        ended = np.flatnonzero(self._ended)
        uniforms, self._step_seeds[ended] = self.task.episode_draws(
            [self._copy_rngs[row] for row in ended]
        )
        self.task.restart(self.state, ended, uniforms)

    def _observations(self, lab_obs: np.ndarray) -> np.ndarray:
        return frame.write_frame_obs(lab_obs) if self.write_frame else lab_obs

    def _final_infos(self, ended: np.ndarray, success: np.ndarray) -> dict:
        state = self.state
        values = {
            "energy_j": np.where(ended, state.energy_j, 0.0),
            "switching_time_s": np.where(ended, state.switching_time_s, np.nan),
            "success": success.copy(),
            "sim_steps": np.where(ended, state.sim_steps, 0),
        }
        infos = dict(values)
        infos.update({f"_{name}": ended.copy() for name in values})
        return infos


class SpinTorqueSOTVectorEnv(SpinTorqueVectorEnv):
    """`SpinTorqueSOT-v0` copies in one batched call (see SpinTorqueVectorEnv)."""

    def __init__(self, num_envs: int = 1, threads: int | None = None,
                 autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP, **env_kwargs) -> None:
        super().__init__(num_envs, device_env=SpinTorqueSOTEnv, threads=threads,
                         autoreset_mode=autoreset_mode, **env_kwargs)

