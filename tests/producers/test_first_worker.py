"""`--first-worker`: one run spread over several hosts (or an Indexed Job's pods) numbers its
workers w<first>.. with their own seed streams, so no two hosts publish the same episodes."""
import producers  # noqa: F401  (registers the envs)
from producers.runner import train
from producers.train_config import TrainConfig
from stgym import events
from stgym.bus import MemoryBus


def _episodes(first_worker: int, tmp_path) -> list:
    bus = MemoryBus(f"first-{first_worker}")
    config = TrainConfig(algorithm="random", episodes=8, workers=2, first_worker=first_worker,
                         experiment="first-worker", run_dir=str(tmp_path / str(first_worker)),
                         metrics_port=None)
    assert train(config, bus=bus).ok
    records = bus.poll([events.TOPIC_EPISODES], group="test", max_records=100)
    return [events.decode(r.value, events.EpisodeEvent) for r in records]


def test_first_worker_numbers_workers_and_seeds(tmp_path):
    host_a, host_b = _episodes(0, tmp_path), _episodes(2, tmp_path)
    assert sorted({e.worker_id for e in host_a}) == ["w0", "w1"]
    assert sorted({e.worker_id for e in host_b}) == ["w2", "w3"]
    assert all(".w2" in e.run_id or ".w3" in e.run_id for e in host_b)
    assert not {e.seed for e in host_a} & {e.seed for e in host_b}
