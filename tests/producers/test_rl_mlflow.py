"""An SB3 run in MLflow (the embedded SQLite store, no server; real MLflow): the SB3 zip as an
artifact and the policy network as an mlflow.pytorch model that acts like the agent."""
import numpy as np
import pytest

from producers import tracking
from producers.runner import train
from producers.train_config import TrainConfig
from producers.trainers import TrainerOptions, sb3
from stgym.bus import MemoryBus


def train_tracked(algorithm, tmp_path, unique_id):
    """A short SB3 run tracked in an embedded SQLite store: (store URI, summary)."""
    store = f"sqlite:///{tmp_path / 'mlflow.sqlite3'}"
    config = TrainConfig(algorithm=algorithm, env_id="SpinTorque-v1", episodes=70, seed=5,
                         experiment=f"sb3-mlflow-{unique_id}",
                         options=TrainerOptions(batch_size=35), run_dir=str(tmp_path / "run"),
                         mlflow=store)
    summary = train(config, bus=MemoryBus(f"sb3-mlflow-{algorithm}-{unique_id}"))
    tracking.wait_all()
    assert summary.ok and summary.mlflow_run_id
    return store, summary


@pytest.mark.parametrize("algorithm", ["ppo", "sac"])
def test_sb3_run_logs_its_zip_and_torch_model(algorithm, tmp_path, unique_id):
    import gymnasium as gym
    import mlflow
    import mlflow.pytorch
    import torch

    from producers.registry import client as mlflow_client

    store, summary = train_tracked(algorithm, tmp_path, unique_id)
    client = mlflow_client(store)
    run = client.get_run(summary.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.params["algorithm"] == algorithm
    assert "policy/model-w0.zip" in {a.path for a in client.list_artifacts(run.info.run_id,
                                                                           "policy")}
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}

    mlflow.set_tracking_uri(store)
    uri = f"runs:/{run.info.run_id}/model"
    actor = mlflow.pytorch.load_model(uri)
    pyfunc = mlflow.pyfunc.load_model(uri)
    assert pyfunc.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 7)
    zipped = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/policy/model-w0.zip",
                                                 dst_path=str(tmp_path / "download"))
    agent = sb3.AGENTS[algorithm].load(zipped, device="cpu")

    env = gym.make("SpinTorque-v1")
    observations = np.stack([env.reset(seed=seed)[0] for seed in range(6)]
                            + [env.observation_space.sample() for _ in range(6)])
    expected, _ = agent.predict(observations, deterministic=True)
    with torch.no_grad():
        actions = actor(torch.as_tensor(observations)).numpy()
    np.testing.assert_allclose(actions, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(observations)), expected,
                               rtol=1e-6, atol=1e-6)


def test_a_registered_sb3_version_is_evaluated_as_its_zip(tmp_path, unique_id):
    """`stgym evaluate models:/NAME/VERSION` of a PPO run's version: the report of `stgym
    evaluate model.zip` on the same episodes, recorded on the version."""
    from producers import registry

    store, summary = train_tracked("ppo", tmp_path, unique_id)
    version = registry.register(store, summary.mlflow_run_id, f"ppo-{unique_id}")
    report = registry.evaluate_model(store, f"models:/ppo-{unique_id}/{version.version}", 40,
                                     None, 7)
    expected = sb3.evaluate_model_file(summary.policy_path, 40, None, 7)
    for key in ("success_rate", "energy_per_switch_j", "mean_episode_steps", "algorithm"):
        assert report[key] == expected[key]
    assert report["version"] == version.version
    [row] = registry.list_models(store)
    assert row["eval.success_rate"] == str(expected["success_rate"]) and row["eval.seed"] == "7"
