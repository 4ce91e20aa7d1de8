"""Configuration in one place: every port, URL and path, overridable by STGYM_* variables.

The bare-machine service scripts read the same values: `python -m stgym.settings --shell`
prints them as shell assignments, so a port is changed in exactly one place.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import quote

import platformdirs

from stgym import certs
from stgym.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
# The generated credentials (files of Settings.secrets_dir): name -> bytes of randomness.
POSTGRES_PASSWORD = "postgres.password"
POSTGRES_READER_PASSWORD = "postgres-reader.password"
KAFKA_PASSWORD = "kafka.password"
ALERT_WEBHOOK_TOKEN = "alert-webhook.token"
RAY_TOKEN = "ray.token"
METRICS_TOKEN = "metrics.token"  # Prometheus's bearer token for /metrics of remote peers
MLFLOW_PASSWORD = "mlflow.password"  # the tracking server's basic-auth user mlflow_username
MLFLOW_SERVER_KEY = "mlflow-server.key"  # its Flask secret key (CSRF), the server's alone
SECRETS = (POSTGRES_PASSWORD, POSTGRES_READER_PASSWORD, KAFKA_PASSWORD, ALERT_WEBHOOK_TOKEN,
           RAY_TOKEN, METRICS_TOKEN, MLFLOW_PASSWORD, MLFLOW_SERVER_KEY)


def _default_run_dir() -> str:
    """`.run` of the checkout (where the service scripts keep pids, data and logs), else, for an
    installed wheel, the user's state directory."""
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "compose" / "bare").is_dir():
        return str(REPO_ROOT / ".run")
    return platformdirs.user_state_dir("stgym")


def _default_data_dir() -> str:
    return platformdirs.user_data_dir("stgym")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Ports, URLs and directories of every service and process (all bound to 127.0.0.1)."""

    host: str = "127.0.0.1"  # this machine: its services and processes listen here
    # Where the shared services run (Kafka, PostgreSQL, Prometheus, Alertmanager, OpenSearch)
    # when that is another machine (README: several machines); "" = host.
    services_host: str = ""
    kafka_port: int = 9092
    kafka_controller_port: int = 9094
    postgres_port: int = 5433
    postgres_user: str = "stgym"
    # Credentials: `services.sh up` generates each once into secrets_dir (mode 0600); the
    # clients read them from there (other machines get a copy of the folder). A non-empty
    # field (STGYM_POSTGRES_PASSWORD, ...) wins over its file. README "Security".
    secrets_dir: str = ""  # "" = <run_dir>/secrets
    postgres_password: str = ""  # "" = secrets_dir/postgres.password
    postgres_db: str = "stgym"
    postgres_reader_user: str = "stgym_reader"  # read-only role of `stgym serve`
    postgres_reader_password: str = ""  # "" = secrets_dir/postgres-reader.password
    # Kafka: PLAINTEXT only on 127.0.0.1:kafka_port (this machine's clients); other machines
    # use the SASL_PLAINTEXT listener on host:kafka_sasl_port, SCRAM-SHA-512 user
    # kafka_sasl_username with the password of secrets_dir/kafka.password.
    kafka_sasl_port: int = 9096
    kafka_security_protocol: str = "PLAINTEXT"  # of the clients: PLAINTEXT or SASL_PLAINTEXT
    kafka_sasl_username: str = "stgym"
    kafka_sasl_password: str = ""  # "" = secrets_dir/kafka.password
    alert_webhook_token: str = ""  # bearer token of the alert webhook; "" = its file
    # Ray across machines (`stgym train --ray-address`, compose/bare/ray.sh): the head's GCS on
    # the services host (ray-head), each trainer host's raylet on ray_node_manager_port
    # (ray-worker); every node and driver authenticates with one token (RAY_AUTH_MODE=token).
    ray_port: int = 6379
    ray_node_manager_port: int = 6380
    ray_worker_cpus: int = 0  # CPUs a trainer host's Ray node offers; 0 = all of the machine
    ray_auth_token: str = ""  # "" = secrets_dir/ray.token
    # /metrics of every stgym process (stgym/httpserver.py) is open to loopback peers; any
    # other peer sends `Authorization: Bearer <token>` (Prometheus: compose/bare/render.py).
    metrics_token: str = ""  # "" = secrets_dir/metrics.token
    prometheus_port: int = 9090
    alertmanager_port: int = 9095
    alert_webhook_port: int = 9099
    opensearch_port: int = 9200
    opensearch_transport_port: int = 9300
    collector_forward_port: int = 24224
    collector_health_port: int = 13133
    collector_metrics_port: int = 8888  # the collector's own telemetry (/metrics)
    collector_otlp_grpc_port: int = 4317
    collector_otlp_http_port: int = 4318
    # The services host's collector takes the worker hosts' logs and traces here: OTLP gRPC
    # with mutual TLS (certificates of secrets_dir, stgym/certs.py). The other receivers of
    # every collector (Fluent forward, plain OTLP) listen on 127.0.0.1 only.
    collector_otlp_tls_port: int = 4319
    jaeger_query_port: int = 16686
    jaeger_query_grpc_port: int = 16685
    jaeger_otlp_grpc_port: int = 4327  # from the collector (compose/collector/config.yaml)
    jaeger_otlp_http_port: int = 4328  # the SDK's own protocol: Docker's processes trace to it
    jaeger_health_port: int = 13134
    jaeger_metrics_port: int = 8889
    postgres_exporter_port: int = 9187
    node_exporter_port: int = 9100
    blackbox_exporter_port: int = 9115
    smoke_metrics_port: int = 9199
    stream_web_port: int = 6066
    trainer_metrics_port: int = 8000
    mlflow_port: int = 5000  # MLflow tracking server (compose/bare/mlflow.sh)
    # Its basic auth (MLflow's basic-auth app, always on): this user is its admin, created on
    # the server's first start with the password of secrets_dir/mlflow.password; the clients
    # (producers/registry.py) send both as MLFLOW_TRACKING_USERNAME / _PASSWORD.
    mlflow_username: str = "stgym"
    mlflow_password: str = ""  # "" = secrets_dir/mlflow.password
    mlflow_db: str = "mlflow"  # its backend store: this database of the PostgreSQL cluster
    # Where `stgym train` tracks: "" = auto (MLFLOW_TRACKING_URI if set, else the local store
    # `mlflow_local_uri` for --bus memory and the tracking server for Kafka); "off"; or a URI.
    mlflow_tracking_uri: str = ""
    # How long the end of a training waits for MLflow calls that failed (the store was down).
    mlflow_retry_s: int = 30
    api_port: int = 8050  # `stgym serve`: KPI HTTP API and live dashboard
    logs_index: str = "stgym-logs"
    log_format: str = "console"
    log_level: str = "INFO"
    log_ship: str = "auto"  # ship logs to the collector: auto (services, or json), on, off
    log_spool_max_bytes: int = 256 * 1024 * 1024  # undelivered records on disk; oldest dropped
    # Monitoring the monitoring: `stgym alerts serve` logs CRITICAL when the always-firing
    # Watchdog alert has not arrived for this long (Alertmanager repeats it every minute).
    watchdog_timeout_s: int = 120
    # Retention, in one place (docs/operations.md): Prometheus TSDB (time and size, passed by
    # compose/bare/prometheus.sh), OpenSearch log indices (ISM policy of `stgym logs setup`),
    # episode rows (`stgym retention apply`; the KPI aggregates are kept).
    prometheus_retention_time: str = "15d"
    prometheus_retention_size: str = "2GB"
    prometheus_admin_api: str = "off"  # on: TSDB snapshots for `stgym backup create`
    log_retention_days: int = 14
    episodes_retention_months: int = 12
    # OTLP/HTTP base URL for traces, e.g. http://127.0.0.1:4318 (the collector; spans are
    # posted to <url>/v1/traces); "" = no tracing
    trace_endpoint: str = ""
    trace_sample_ratio: float = 1.0  # parent-based ratio sampler (README: production values)
    run_dir: str = dataclasses.field(default_factory=_default_run_dir)
    cache_dir: str = dataclasses.field(
        default_factory=lambda: str(Path.home() / ".cache" / "stgym")
    )
    data_dir: str = dataclasses.field(default_factory=_default_data_dir)
    backup_dir: str = dataclasses.field(
        default_factory=lambda: str(Path(_default_data_dir()) / "backups")
    )

    @property
    def shared_host(self) -> str:
        """The address of the shared services."""
        return self.services_host or self.host

    @property
    def kafka_url(self) -> str:
        return f"kafka://{self.kafka_bootstrap}"

    @property
    def kafka_bootstrap(self) -> str:
        """host:port of the listener of kafka_security_protocol (PLAINTEXT: loopback only)."""
        if self.kafka_security_protocol == "SASL_PLAINTEXT":
            return f"{self.shared_host}:{self.kafka_sasl_port}"
        if self.kafka_security_protocol != "PLAINTEXT":
            raise UserError(f"STGYM_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol!r}: "
                            "expected PLAINTEXT or SASL_PLAINTEXT")
        return f"{LOOPBACK}:{self.kafka_port}"

    def kafka_client_options(self) -> dict:
        """Security options of every Kafka client (kafka-python and aiokafka take the same
        names); {} for PLAINTEXT."""
        if self.kafka_security_protocol != "SASL_PLAINTEXT":
            return {}
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": self.secret(KAFKA_PASSWORD, self.kafka_sasl_password)}

    def secret_path(self, name: str) -> Path:
        return Path(self.secrets_dir or Path(self.run_dir) / "secrets") / name

    @property
    def collector_tls_files(self) -> dict[str, Path]:
        """ca, server_cert, server_key, client_cert, client_key of the collectors' mutual TLS."""
        return certs.files(self.secret_path(""))

    def secret(self, name: str, value: str = "") -> str:
        """`value` when set (an STGYM_* override), else the generated file secrets_dir/name."""
        if value:
            return value
        path = self.secret_path(name)
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise UserError(
                f"credential file {path} not found: `bash compose/bare/services.sh up` creates "
                "it on the services host; copy that host's secrets folder here (STGYM_SECRETS_DIR) "
                "or set the STGYM_* variable") from None

    @property
    def ray_address(self) -> str:
        """The Ray head's GCS (`ray start --address`, `stgym train --ray-address`)."""
        return f"{self.shared_host}:{self.ray_port}"

    def scrape_token(self) -> str:
        """The bearer token remote scrapers of /metrics send."""
        return self.secret(METRICS_TOKEN, self.metrics_token)

    def ray_auth_env(self) -> dict[str, str]:
        """The environment of Ray's token authentication, the same on every node and driver."""
        if self.ray_auth_token:
            return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.ray_auth_token}
        self.secret(RAY_TOKEN)  # missing: the error that says where the file comes from
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.secret_path(RAY_TOKEN))}

    @property
    def postgres_url(self) -> str:
        return self.postgres_url_for(self.postgres_db)

    def postgres_url_for(self, database: str) -> str:
        """The application role's URL of `database` (password from its file)."""
        return (
            f"postgresql://{self.postgres_user}:"
            f"{quote(self.secret(POSTGRES_PASSWORD, self.postgres_password), safe='')}"
            f"@{self.shared_host}:{self.postgres_port}/{database}"
        )

    @property
    def postgres_reader_url(self) -> str:
        return (
            f"postgresql://{self.postgres_reader_user}:"
            f"{quote(self.secret(POSTGRES_READER_PASSWORD, self.postgres_reader_password), safe='')}"
            f"@{self.shared_host}:{self.postgres_port}/{self.postgres_db}"
        )

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{Path(self.data_dir) / 'stgym.sqlite3'}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.shared_host}:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{self.shared_host}:{self.alertmanager_port}"

    @property
    def opensearch_url(self) -> str:
        """OpenSearch, on the services host's loopback only (it runs without its security
        plugin; other machines' logs arrive through the collectors' mutual-TLS hop)."""
        return f"http://{LOOPBACK}:{self.opensearch_port}"

    @property
    def mlflow_url(self) -> str:
        """The MLflow tracking server."""
        return f"http://{self.shared_host}:{self.mlflow_port}"

    def mlflow_auth_env(self) -> dict[str, str]:
        """The tracking server's credentials as MLflow's HTTP client reads them."""
        return {"MLFLOW_TRACKING_USERNAME": self.mlflow_username,
                "MLFLOW_TRACKING_PASSWORD": self.secret(MLFLOW_PASSWORD, self.mlflow_password)}

    @property
    def mlflow_backend_store_uri(self) -> str:
        """The tracking server's backend store (psycopg2: SQLAlchemy's bare postgresql:// would
        look for psycopg 3)."""
        return "postgresql+psycopg2" + self.postgres_url_for(self.mlflow_db)[len("postgresql"):]

    @property
    def mlflow_local_uri(self) -> str:
        """The embedded tracking store (`stgym demo`, `stgym train --bus memory`): no server."""
        return f"sqlite:///{Path(self.data_dir) / 'mlflow.sqlite3'}"

    @property
    def jaeger_url(self) -> str:
        """Jaeger's query API, on the services host's loopback only (no authentication)."""
        return f"http://{LOOPBACK}:{self.jaeger_query_port}"

    @property
    def collector_forward_address(self) -> tuple[str, int]:
        """This machine's collector's Fluent forward receiver (loopback: no authentication)."""
        return (LOOPBACK, self.collector_forward_port)

    @property
    def collector_otlp_url(self) -> str:
        """This machine's collector's OTLP/HTTP receiver, the trace_endpoint of its processes
        (loopback; other machines' collectors use the mutual-TLS port collector_otlp_tls_port)."""
        return f"http://{LOOPBACK}:{self.collector_otlp_http_port}"


def load() -> Settings:
    """Settings with every field overridden by the environment variable STGYM_<FIELD>."""
    overrides = {}
    for field in dataclasses.fields(Settings):
        raw = os.environ.get(f"STGYM_{field.name.upper()}")
        if raw is None:
            continue
        convert = {"int": int, "float": float}.get(field.type, str)
        overrides[field.name] = convert(raw)
    return Settings(**overrides)


def kafka_options() -> dict:
    """The security options every Kafka client passes (load().kafka_client_options())."""
    return load().kafka_client_options()


def ensure_secrets(settings: Settings) -> list[Path]:
    """Create each missing credential file (random, mode 0600, folder 0700); returns the new
    ones. Run by the service scripts on the services host (`services.sh up`)."""
    created = []
    for name in SECRETS:
        path = settings.secret_path(name)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
        created.append(path)
    return created + certs.ensure_collector_certs(settings.secret_path(""))


def as_shell(settings: Settings) -> str:
    """Shell assignments STGYM_<FIELD>=value for the service scripts."""
    lines = [
        f"STGYM_{field.name.upper()}='{getattr(settings, field.name)}'"
        for field in dataclasses.fields(settings)
    ]
    lines.append(f"STGYM_POSTGRES_URL='{settings.postgres_url}'")
    lines.append(f"STGYM_POSTGRES_READER_URL='{settings.postgres_reader_url}'")
    lines.append(f"STGYM_MLFLOW_BACKEND_STORE_URI='{settings.mlflow_backend_store_uri}'")
    lines.append(f"STGYM_RAY_ADDRESS='{settings.ray_address}'")
    lines += [f"STGYM_COLLECTOR_TLS_{label.upper()}='{path}'"
              for label, path in settings.collector_tls_files.items()]
    lines.append(f"STGYM_COLLECTOR_TLS_SERVER_NAME='{certs.SERVER_NAME}'")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shell", action="store_true", help="print shell assignments")
    parser.add_argument("--ensure-secrets", action="store_true",
                        help="first create the missing credential files of secrets_dir")
    parser.add_argument("--get", metavar="NAME",
                        help="print one field or URL, e.g. postgres_url (with its password)")
    args = parser.parse_args()
    settings = load()
    if args.ensure_secrets:
        for path in ensure_secrets(settings):
            print(f"[services] generated {path} (mode 0600)", file=sys.stderr)
    if args.get:
        if args.get.startswith("_") or not hasattr(settings, args.get):
            parser.error(f"--get {args.get!r}: no such setting or URL")
        print(getattr(settings, args.get))
    elif args.shell:
        print(as_shell(settings))
    else:
        for field in dataclasses.fields(settings):
            print(f"{field.name:28s} {getattr(settings, field.name)}")


if __name__ == "__main__":
    main()
