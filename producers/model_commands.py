"""`stgym models {register,promote,list}`: trained policies in the MLflow model registry
(producers/registry.py). `--mlflow URI` as for `stgym train` (default: the setting /
MLFLOW_TRACKING_URI, else the local store of `stgym train --bus memory`)."""
from __future__ import annotations

import json


REGISTRY_HELP = ("MLflow tracking URI, e.g. http://127.0.0.1:5000 (default: settings "
                 "mlflow_tracking_uri / MLFLOW_TRACKING_URI, else the local store "
                 "sqlite:///<data dir>/mlflow.sqlite3)")


def add_mlflow_option(parser, help_text: str = REGISTRY_HELP) -> None:
    parser.add_argument("--mlflow", default=None, metavar="URI", help=help_text)


def register(subparsers) -> None:
    models = subparsers.add_parser("models", help="trained policies in the MLflow registry")
    commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    reg = commands.add_parser("register", help="register a `stgym train` run's policy")
    reg.add_argument("run", help="the MLflow parent run id of a `stgym train`")
    reg.add_argument("--name", required=True, help="registered model name")
    promote = commands.add_parser("promote", help="point an alias at a model version")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--alias", default="production")
    listing = commands.add_parser("list", help="registered models, versions, aliases, evals")
    for parser in (reg, promote, listing):
        add_mlflow_option(parser)
        parser.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(handler=run)


def tracking_uri(option: str | None) -> str:
    from producers.tracking import resolve_uri
    from stgym.errors import UserError

    uri = resolve_uri(option)
    if uri is None:
        raise UserError("--mlflow off: the registry needs a tracking URI")
    return uri


def run(args) -> int:
    from producers import registry

    uri = tracking_uri(args.mlflow)
    if args.models_command == "register":
        version = registry.register(uri, args.run, args.name)
        result = {"model": version.name, "version": version.version, "run_id": args.run}
    elif args.models_command == "promote":
        registry.promote(uri, args.name, args.version, args.alias)
        result = {"model": args.name, "version": args.version, "alias": args.alias}
    else:
        rows = registry.list_models(uri)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                evals = " ".join(f"{k[5:]}={v}" for k, v in row.items() if k.startswith("eval."))
                print(f"{row['name']:28s} v{row['version']:<4} "
                      f"{','.join('@' + a for a in row['aliases']) or '-':14s} "
                      f"run {row['run_id']}  {evals}")
        return 0
    print(json.dumps(result) if args.json else " ".join(f"{k} {v}" for k, v in result.items()))
    return 0
