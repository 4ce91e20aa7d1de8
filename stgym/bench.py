"""`stgym bench TARGET`: benchmarks reported as ratios against references measured in the same run."""
from __future__ import annotations

import importlib

BENCH_MODULES = {
    "physics": "physics_ext.bench",
    "envs": "producers.bench",
    "pipeline": "streams.bench",
    "rl": "producers.rl_bench",
    "ray": "producers.ray_bench",
    "tracing": "streams.tracebench",
    "tracking": "producers.tracking_bench",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark (physics, envs, pipeline, tracing)")
    parser.add_argument("target", choices=sorted(BENCH_MODULES))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a shorter run (for smoke tests)")
    parser.add_argument("--breakdown", action="store_true",
                        help="tracing: also the record headers alone and the SDK alone")
    parser.set_defaults(handler=run)


def run(args) -> int:
    return importlib.import_module(BENCH_MODULES[args.target]).main(args)
