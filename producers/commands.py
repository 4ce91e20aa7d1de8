"""CLI commands of this package (see stgym/cli.py): `stgym train`, `stgym evaluate` and
`stgym models` (producers/model_commands.py)."""
from __future__ import annotations

import json
import math
import sys

from producers import model_commands
from producers.envs import ARRAY_ENV_IDS
from producers.model_commands import add_mlflow_option


def register(subparsers) -> None:
    """Declares this package's subcommands."""
    train = subparsers.add_parser(
        "train", help="train a pulse policy on K worker processes, publishing episode events",
        description="Train a switching policy. Every finished episode becomes an EpisodeEvent on "
        "the bus; exits non-zero if a worker failed.",
    )
    train.add_argument(
        "--algo", default="cem",
        help="constant, random, cem, reinforce, or ppo / sac (stable-baselines3: the rl extra; "
        "hyperparameters in producers/trainers/hyperparams.yml)",
    )
    train.add_argument(
        "--env", default="SpinTorque-v1",
        help="SpinTorque-v1, SpinTorqueSOT-v1 or SpinTorqueArray-v1 (the write frame, "
        "docs/rl.md), or their v0 (the array: N = 4 devices, each episode writes a random "
        "pattern; the pulse drives every device that has to flip)",
    )
    train.add_argument("--episodes", type=int, default=512, help="episodes over all workers")
    train.add_argument("--workers", type=int, default=1, help="worker processes")
    train.add_argument(
        "--ray-workers", type=int, default=0, metavar="K",
        help="one learner whose episodes run on K Ray workers (one CPU each; the rl extra): "
        "a pulse trainer's batches as Ray tasks, ppo/sac's vector env copies in K Ray actors",
    )
    train.add_argument("--ray-address", default=None,
                       help="join this Ray cluster (HOST:PORT) instead of a local instance")
    train.add_argument(
        "--first-worker", type=int, default=0,
        help="number of this host's first worker (worker ids and seed streams w<N>..; a run "
        "spread over several hosts or a Kubernetes Indexed Job gives each its own range)",
    )
    train.add_argument("--experiment", default="default", help="experiment id on every event")
    train.add_argument("--seed", type=int, default=0, help="root of every worker's seed stream")
    train.add_argument("--bus", default="memory", help="memory or kafka://HOST:PORT")
    train.add_argument("--temperature", type=float, default=None, help="K (env default 300)")
    train.add_argument(
        "--env-kwargs", default=None, metavar="JSON",
        help='more env arguments as a JSON object, e.g. \'{"num_devices": 8, '
        '"dipolar_coupling": true}\' for SpinTorqueArray-v1',
    )
    train.add_argument("--segments", type=int, default=None, help="pulse segments (0.1 ns each)")
    train.add_argument("--batch-size", type=int, default=None, help="episodes per iteration")
    train.add_argument("--wer-target", type=float, default=None, help="write-error-rate target")
    train.add_argument(
        "--policy-out", default=None,
        help="save the final policy (JSON) here (default: RUN_DIR/policy.json)",
    )
    train.add_argument("--run-dir", default=None, help="worker ledgers and pid files go here")
    train.add_argument(
        "--metrics-port", type=int, default=None,
        help="first worker /metrics port (default settings.trainer_metrics_port); -1: none",
    )
    add_mlflow_option(train, "track here: URI, or off (default: settings mlflow_tracking_uri / "
                      "MLFLOW_TRACKING_URI, else the local store for --bus memory and the "
                      "tracking server for Kafka)")
    train.add_argument(
        "--register", default=None, metavar="NAME",
        help="register the final policy as a version of the MLflow model NAME and promote it "
        "to @production if its certified evaluation beats the current one (README)",
    )
    train.add_argument("--json", action="store_true", help="print the summary as JSON")
    train.set_defaults(handler=run_train)

    evaluate = subparsers.add_parser(
        "evaluate", help="measure a saved policy's write error rate and energy",
    )
    evaluate.add_argument(
        "policy", help="a policy file written by `stgym train` (JSON, or the .zip model of "
        "--algo ppo|sac), or a registered model models:/NAME@ALIAS or models:/NAME/VERSION "
        "(the evaluation is recorded on it)",
    )
    add_mlflow_option(evaluate)
    evaluate.add_argument("--episodes", type=int, default=1000)
    evaluate.add_argument("--temperature", type=float, default=None, help="K (default: as trained)")
    evaluate.add_argument("--seed", type=int, default=12345)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=run_evaluate)
    model_commands.register(subparsers)


def _trainer_options(args):
    from producers.trainers import TrainerOptions

    overrides = {
        name: value for name, value in (
            ("segments", args.segments), ("batch_size", args.batch_size),
            ("wer_target", args.wer_target),
        ) if value is not None
    }
    for name, value in overrides.items():
        if value <= 0:
            raise _user_error(f"--{name.replace('_', '-')} must be > 0, got {value}")
    return TrainerOptions(**overrides)


def _env_kwargs(text: str | None) -> dict:
    """--env-kwargs: a JSON object of env constructor arguments (UserError otherwise)."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise _user_error(f"--env-kwargs: not JSON ({error})") from None
    if not isinstance(value, dict):
        raise _user_error(f"--env-kwargs: expected a JSON object, got {text!r}")
    return value


def _user_error(message: str):
    from stgym.errors import UserError

    return UserError(message)


def run_train(args) -> int:
    from producers import tracking
    from producers.runner import train
    from producers.train_config import TrainConfig
    from stgym import settings as settings_module

    env_kwargs = _env_kwargs(args.env_kwargs)
    if args.temperature is not None:
        env_kwargs["temperature"] = args.temperature
    metrics_port = args.metrics_port
    if metrics_port is None:
        metrics_port = settings_module.load().trainer_metrics_port
    config = TrainConfig(
        algorithm=args.algo, env_id=args.env, env_kwargs=env_kwargs, episodes=args.episodes,
        workers=args.workers, first_worker=args.first_worker, experiment=args.experiment,
        ray_workers=args.ray_workers, ray_address=args.ray_address,
        seed=args.seed, bus_url=args.bus,
        options=_trainer_options(args), policy_out=args.policy_out, run_dir=args.run_dir,
        metrics_port=None if metrics_port < 0 else metrics_port,
        log_format=args.log_format, log_level=args.log_level, mlflow=args.mlflow,
    )
    config.validate()
    tracking_uri = tracking.resolve_uri(args.mlflow, args.bus)  # bad URI: one line, now
    if args.register and tracking_uri is None:
        raise _user_error("--register needs tracking: drop --mlflow off")
    if args.bus.startswith("kafka"):
        from stgym.bus import open_bus

        open_bus(args.bus).close()  # fail fast, with one line, if Kafka does not answer
    if args.json:
        summary = train(config)
        tracking.wait_all()  # the run complete in MLflow (and its id known) before the summary
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        summary = _train_with_progress_bar(config, train)
        tracking.wait_all()
        _print_summary(summary)
    if args.register and summary.ok:
        return _register(tracking_uri, summary, args)
    return 0 if summary.ok else 1


def _register(uri: str, summary, args) -> int:
    from producers import registry
    from producers.trainers import TrainerOptions

    if summary.mlflow_run_id is None:
        print(f"stgym train: --register {args.register}: not registered, the run was not "
              f"tracked (MLflow at {uri} did not answer)", file=sys.stderr)
        return 1
    wer_target = args.wer_target or TrainerOptions().wer_target
    result = registry.register_and_maybe_promote(uri, summary.mlflow_run_id, args.register,
                                                 wer_target)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        current = result["production_before"]
        print(f"registered        {result['model']} version {result['version']} "
              f"({'promoted to @production' if result['promoted'] else 'not promoted'}: WER 95 % "
              f"bound {result['candidate']['write_error_rate_95_upper']:.2e} vs target "
              f"{wer_target:.0e}, {result['episodes']} episodes"
              + (f"; @production was version {current['version']}" if current else "") + ")")
    return 0


def _train_with_progress_bar(config, train):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    per_bit = config.env_id in ARRAY_ENV_IDS  # an array episode writes up to N bits
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("success {task.fields[success]}"),
        TextColumn(("E/bit" if per_bit else "E/switch") + " {task.fields[energy]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(
            f"{config.algorithm} x{config.workers}", total=config.episodes, success="-",
            energy="-",
        )

        def update(progress):
            bar.update(
                task, completed=progress.episodes, success=f"{progress.success_rate:6.1%}",
                energy=_joules(
                    progress.energy_per_bit_j if per_bit else progress.energy_per_switch_j
                ),
            )

        return train(config, progress=update)


def _joules(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * 1e15:.1f} fJ"


def _print_summary(summary) -> None:
    lines = [
        f"experiment        {summary.experiment} ({summary.algorithm} on {summary.env_id})",
        f"episodes          {summary.episodes}",
        f"success rate      {summary.success_rate:.2%}",
        f"energy / switch   {_joules(summary.energy_per_switch_j)}",
        *([f"energy / bit      {_joules(summary.energy_per_bit_j)}"]
          if summary.env_id in ARRAY_ENV_IDS else []),
        "switching time    " + (
            f"{summary.mean_switching_time_s * 1e9:.3f} ns"
            if math.isfinite(summary.mean_switching_time_s) else "-"
        ),
        f"sim steps / s     {summary.sim_steps_per_s:,.0f}",
        f"wall time         {summary.wall_time_s:.1f} s",
    ]
    if summary.policy_path:
        lines.append(f"policy            {summary.policy_path}")
    if summary.mlflow_run_id:
        lines.append(f"mlflow run        {summary.mlflow_run_id}")
    if summary.failed_workers:
        lines.append(f"FAILED workers    {', '.join(summary.failed_workers)}")
    print("\n".join(lines))


def run_evaluate(args) -> int:
    from producers.evaluation import evaluate_policy
    from producers.rollout import PulsePolicy

    if args.episodes < 1:
        raise _user_error(f"--episodes must be >= 1, got {args.episodes}")
    if args.policy.startswith("models:/"):
        from producers.model_commands import tracking_uri
        from producers.registry import evaluate_model

        report = evaluate_model(tracking_uri(args.mlflow), args.policy, args.episodes,
                                args.temperature, args.seed)
    elif args.policy.endswith(".zip"):  # an SB3 agent of stgym train --algo ppo|sac
        from producers.trainers import sb3_module

        report = sb3_module().evaluate_model_file(args.policy, args.episodes, args.temperature,
                                                  args.seed)
    else:
        report = evaluate_policy(PulsePolicy.load(args.policy), args.episodes,
                                 args.temperature, args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:24s} {value}")
    return 0

