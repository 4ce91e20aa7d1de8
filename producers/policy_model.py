"""A trained pulse policy as an MLflow model (pyfunc flavour, with a signature).

>>> import mlflow
>>> model = mlflow.pyfunc.load_model("models:/stt-mram-controller@production")  # doctest: +SKIP
>>> model.predict(observations)                        # actions, (n, action dim) float32
>>> model.predict(observations, params={"output": "pulse"})  # the pulse: (1, K) amplitudes

Input: observations of the policy's env, float32 (n, 9) for the single-device v0 envs, (n, 7)
for their v1 (the write frame), (n, 5N + 2) for SpinTorqueArray-v0 and -v1. Output `action`
(the default): the env action for each observation (what `PulsePolicy.__call__` gives: v0, a
signed fraction of j_max; v1, the current toward the target, −1 off). Output `pulse`: the pulse
itself, its amplitude per control interval (fraction of j_max toward the write direction).
The model carries the policy file (artifact `policy`, the JSON of `stgym train`); its code is
producers/policy_model_code.py (an MLflow "model from code", no pickle).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import mlflow.pyfunc
import numpy as np

MODEL_ARTIFACT_PATH = "model"
CODE_FILE = Path(__file__).with_name("policy_model_code.py")


class PulsePolicyModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of a `PulsePolicy` (loaded from the model's `policy` artifact)."""

    def load_context(self, context) -> None:
        from producers.rollout import PulsePolicy, episode_task

        self.policy = PulsePolicy.load(context.artifacts["policy"])
        self.max_steps = episode_task(self.policy.env_id, self.policy.env_kwargs).max_steps

    def predict(self, context, model_input, params: dict | None = None) -> np.ndarray:
        output = (params or {}).get("output", "action")
        if output == "pulse":
            return np.asarray(self.policy.amplitudes, dtype=np.float32)[None, :]
        if output != "action":
            raise ValueError(f"params output={output!r}: expected 'action' or 'pulse'")
        observations = np.atleast_2d(np.asarray(model_input, dtype=np.float32))
        return np.atleast_2d(self.policy(observations, self.max_steps))


def signature(env_id: str, env_kwargs: dict, output_param: bool = True):
    """The signature of a policy for `env_id`: float32 observations in, actions out (and the
    `output` parameter of a pulse policy's model)."""
    import gymnasium as gym
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    import producers  # noqa: F401  (registers the envs)

    env = gym.make(env_id, **env_kwargs)
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, obs_dim))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, action_dim))]),
        params=ParamSchema([ParamSpec("output", "string", "action")]) if output_param else None,
    )


def save_policy_model(policy_path: str, path: str) -> None:
    """Write the pyfunc model of the policy file `policy_path` to the directory `path`."""
    from producers.rollout import PulsePolicy

    policy = PulsePolicy.load(policy_path)
    model_signature = signature(policy.env_id, policy.env_kwargs)
    with warnings.catch_warnings():
        # MLflow's hints (type hints on predict, pickling) do not apply to a model from code
        warnings.simplefilter("ignore", UserWarning)
        mlflow.pyfunc.save_model(
            path, python_model=str(CODE_FILE), artifacts={"policy": str(policy_path)},
            signature=model_signature,
            # explicit: inferring them would load the model in a subprocess (seconds)
            pip_requirements=["spin-torque-gym", f"mlflow-skinny=={mlflow.__version__}"],
            metadata={"env_id": policy.env_id, "algorithm": policy.algorithm},
        )
