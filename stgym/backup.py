"""Backups of the bare-machine stack: `stgym backup create|list|prune|restore`.

A backup is one directory (default under settings.backup_dir, named stgym-<UTC time>):

=====================  ================================================================
``postgres/<db>.dump``  ``pg_dump --format=custom`` of the KPI database and, where it exists,
                        MLflow's backend database (settings.mlflow_db)
``prometheus/``         a TSDB snapshot (admin API: ``STGYM_PROMETHEUS_ADMIN_API=on``)
``opensearch/``         a filesystem snapshot repository holding one snapshot of the log
                        indices (``<logs_index>-*``; path.repo of compose/bare/opensearch.sh)
``mlflow-artifacts/``   MLflow's artifact store, where it exists
``dashboards/``         compose/grafana/dashboards/*.json
``manifest.json``       written last: every file with its size and sha256
=====================  ================================================================

It is written as ``<name>.partial`` and renamed when complete, so an interrupted backup never
looks like one. `restore` checks every file against the manifest and every target for a clash
before it changes anything: a corrupt or partial backup, or a stack that already holds data,
is a clear error and nothing is overwritten. Restore targets a fresh stack
(`services.sh clean` + `up`): the databases must have no tables, the TSDB blocks and the log
indices (restored as ``<index>-restored``) must not exist yet.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from stgym import settings as settings_module
from stgym.errors import ServiceUnavailable, UserError

log = logging.getLogger("stgym.backup")

FORMAT = 1
MANIFEST = "manifest.json"
PARTIAL = ".partial"
REPOSITORY = "stgym-backup"
RESTORED_SUFFIX = "-restored"
DASHBOARDS = settings_module.REPO_ROOT / "compose" / "grafana" / "dashboards"
HTTP_TIMEOUT_S = 600.0


# --------------------------------------------------------------------------- places
def prometheus_data_dir(settings: settings_module.Settings) -> Path:
    return Path(settings.run_dir) / "prometheus"  # compose/bare/prometheus.sh


def opensearch_repository_dir(settings: settings_module.Settings) -> Path:
    return (Path(settings.run_dir) / "opensearch" / "snapshots").resolve()  # opensearch.sh path.repo


def mlflow_artifacts_dir(settings: settings_module.Settings) -> Path:
    return Path(settings.run_dir) / "mlflow-artifacts"  # compose/bare/mlflow.sh


# --------------------------------------------------------------------------- helpers
def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceUnavailable(f"{what} failed (exit {result.returncode}): "
                                 f"{(result.stderr or result.stdout).strip()[-600:]}")


def _http(method: str, url: str, what: str, **kwargs) -> dict[str, Any]:
    try:
        response = requests.request(method, url, timeout=HTTP_TIMEOUT_S, **kwargs)
    except requests.ConnectionError as error:
        raise ServiceUnavailable(f"{what}: {url} does not answer") from error
    if response.status_code >= 300:
        raise ServiceUnavailable(f"{what}: {method} {url} answered HTTP {response.status_code}: "
                                 f"{response.text.strip()[:400]}")
    return response.json() if response.content else {}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copytree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, symlinks=False, dirs_exist_ok=False)


def _chown_like(path: Path, reference: Path) -> None:
    """Hand a tree we copied (as root) to the owner of `reference` (e.g. the opensearch user)."""
    stat = reference.stat()
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, stat.st_uid, stat.st_gid)


def _pg_tables(url: str) -> dict[str, bool] | None:
    """{table: has rows} of the database at `url`; None when the database does not exist."""
    import psycopg2
    from psycopg2 import sql

    try:
        conn = psycopg2.connect(url, connect_timeout=10)
    except psycopg2.OperationalError as error:
        if "does not exist" in str(error):
            return None
        raise ServiceUnavailable(f"PostgreSQL does not answer: {str(error).strip()}") from error
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN"
                        " ('pg_catalog', 'information_schema') ORDER BY tablename")
            tables = {}
            for schema, table in cur.fetchall():
                cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.{})").format(
                    sql.Identifier(schema), sql.Identifier(table)))
                tables[table] = cur.fetchone()[0]
            return tables
    finally:
        conn.close()


def _drop_empty_tables(url: str, tables: list[str]) -> None:
    """Drop the (checked empty) schema a fresh stack's sinks created, so the dump's schema and
    migration ledger replace it; later migrations then apply on top as usual."""
    import psycopg2
    from psycopg2 import sql

    with psycopg2.connect(url, connect_timeout=10) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE {} CASCADE").format(
            sql.SQL(", ").join(sql.Identifier(t) for t in tables)))
    conn.close()


def _create_database(settings: settings_module.Settings, name: str) -> None:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(settings.postgres_url, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


# --------------------------------------------------------------------------- create
def _dump_postgres(settings, target: Path) -> list[str]:
    target.mkdir()
    dumped = []
    for database in (settings.postgres_db, settings.mlflow_db):
        url = settings.postgres_url_for(database)
        if _pg_tables(url) is None:
            if database == settings.postgres_db:
                raise ServiceUnavailable(f"the KPI database {database!r} does not exist")
            continue
        _run(["pg_dump", "--format=custom", f"--file={target / f'{database}.dump'}",
              f"--dbname={url}"], f"pg_dump of {database}")
        dumped.append(database)
    return dumped


def _snapshot_prometheus(settings, target: Path) -> str:
    url = f"{settings.prometheus_url}/api/v1/admin/tsdb/snapshot"
    try:
        answer = _http("POST", url, "Prometheus TSDB snapshot")
    except ServiceUnavailable as error:
        if "HTTP 404" in str(error) or "admin APIs disabled" in str(error):
            raise UserError("the Prometheus admin API is off: start Prometheus with "
                            "STGYM_PROMETHEUS_ADMIN_API=on (compose/bare/services.sh up prometheus)"
                            ) from error
        raise
    name = answer["data"]["name"]
    snapshot = prometheus_data_dir(settings) / "snapshots" / name
    if not snapshot.is_dir():
        raise ServiceUnavailable(f"Prometheus made snapshot {name}, but {snapshot} does not exist: "
                                 f"is settings.run_dir ({settings.run_dir}) that Prometheus's?")
    try:
        _copytree(snapshot, target)
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
    return name


def _snapshot_opensearch(settings, target: Path, name: str) -> list[str]:
    base = settings.opensearch_url
    repo_dir = opensearch_repository_dir(settings)
    location = repo_dir / name
    try:
        _http("PUT", f"{base}/_snapshot/{REPOSITORY}-{name}", "OpenSearch snapshot repository",
              json={"type": "fs", "settings": {"location": str(location)}})
    except ServiceUnavailable as error:
        if "path.repo" in str(error):
            raise UserError(f"OpenSearch at {base} runs without path.repo {repo_dir}: restart it "
                            "(compose/bare/services.sh down opensearch; ... up opensearch)") from error
        raise
    try:
        answer = _http(
            "PUT", f"{base}/_snapshot/{REPOSITORY}-{name}/{name}?wait_for_completion=true",
            "OpenSearch snapshot",
            json={"indices": f"{settings.logs_index}-*", "include_global_state": False,
                  "ignore_unavailable": True})
        snapshot = answer["snapshot"]
        if snapshot["state"] != "SUCCESS":
            raise ServiceUnavailable(f"OpenSearch snapshot {name} ended {snapshot['state']}")
        _copytree(location, target)
        return sorted(snapshot["indices"])
    finally:
        requests.delete(f"{base}/_snapshot/{REPOSITORY}-{name}", timeout=60)
        shutil.rmtree(location, ignore_errors=True)


def create(to: Path | None = None, settings: settings_module.Settings | None = None) -> Path:
    """Back up the stack of `settings` into `to` (default backup_dir/stgym-<time>)."""
    settings = settings or settings_module.load()
    started = time.monotonic()
    created = dt.datetime.now(dt.timezone.utc)
    name = f"stgym-{created:%Y%m%dT%H%M%SZ}"
    final = Path(to) if to else Path(settings.backup_dir) / name
    if final.exists():
        raise UserError(f"backup target {final} already exists")
    work = final.with_name(final.name + PARTIAL)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    components: dict[str, Any] = {}
    timings: dict[str, float] = {}

    def timed(component: str, action):
        t0 = time.monotonic()
        components[component] = action()
        timings[component] = round(time.monotonic() - t0, 2)

    try:  # a failed backup leaves nothing behind
        timed("postgres", lambda: _dump_postgres(settings, work / "postgres"))
        timed("prometheus", lambda: _snapshot_prometheus(settings, work / "prometheus"))
        timed("opensearch", lambda: _snapshot_opensearch(settings, work / "opensearch", name.lower()))
        artifacts = mlflow_artifacts_dir(settings)
        if artifacts.is_dir():
            timed("mlflow_artifacts", lambda: _copytree(artifacts, work / "mlflow-artifacts") or True)
        timed("dashboards", lambda: _copy_dashboards(work / "dashboards"))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    files = [{"path": path.relative_to(work).as_posix(), "size": path.stat().st_size,
              "sha256": _sha256(path)}
             for path in sorted(work.rglob("*")) if path.is_file()]
    manifest = {
        "format": FORMAT, "name": final.name, "created_at": created.isoformat(),
        "opensearch_snapshot": name.lower(), "components": components,
        "seconds": {**timings, "total": round(time.monotonic() - started, 2)},
        "size_bytes": sum(f["size"] for f in files), "files": files,
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=1))
    work.rename(final)
    log.info("backup %s: %d files, %d bytes in %.1f s", final, len(files), manifest["size_bytes"],
             manifest["seconds"]["total"])
    return final


def _copy_dashboards(target: Path) -> list[str]:
    target.mkdir()
    names = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        shutil.copy2(path, target / path.name)
        names.append(path.name)
    return names


# --------------------------------------------------------------------------- list, prune
@dataclass(frozen=True)
class BackupInfo:
    path: Path
    manifest: dict[str, Any] | None  # None: incomplete or unreadable

    @property
    def created_at(self) -> str:
        return self.manifest["created_at"] if self.manifest else "-"


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of backup `path`, or a UserError saying why it is no complete backup."""
    if path.name.endswith(PARTIAL):
        raise UserError(f"{path} is an unfinished backup ({PARTIAL})")
    file = path / MANIFEST
    if not file.is_file():
        raise UserError(f"{path} is no complete backup: {MANIFEST} is missing")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{file} is unreadable: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("files"), list):
        raise UserError(f"{file} is not a format-{FORMAT} stgym backup manifest")
    return manifest


def list_backups(settings: settings_module.Settings | None = None) -> list[BackupInfo]:
    """Every backup directory under backup_dir, oldest first (incomplete ones too)."""
    root = Path((settings or settings_module.load()).backup_dir)
    infos = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.is_dir():
            try:
                infos.append(BackupInfo(path, read_manifest(path)))
            except UserError:
                infos.append(BackupInfo(path, None))
    return sorted(infos, key=lambda info: (info.created_at, info.path.name))


def prune(keep: int, settings: settings_module.Settings | None = None) -> list[Path]:
    """Delete all but the newest `keep` complete backups (incomplete ones are left alone)."""
    if keep < 1:
        raise UserError(f"--keep must be at least 1, got {keep}")
    complete = [info for info in list_backups(settings) if info.manifest]
    doomed = [info.path for info in complete[:-keep]]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


# --------------------------------------------------------------------------- restore
def verify(path: Path) -> dict[str, Any]:
    """The manifest, once every file it lists is present with its size and sha256."""
    manifest = read_manifest(path)
    for entry in manifest["files"]:
        file = path / entry["path"]
        if not file.is_file():
            raise UserError(f"backup {path} is incomplete: {entry['path']} is missing")
        if file.stat().st_size != entry["size"]:
            raise UserError(f"backup {path} is corrupt: {entry['path']} has "
                            f"{file.stat().st_size} bytes, the manifest says {entry['size']}")
        if _sha256(file) != entry["sha256"]:
            raise UserError(f"backup {path} is corrupt: {entry['path']} does not match its sha256")
    return manifest


def _preflight(path: Path, manifest: dict[str, Any], settings) -> dict[str, Any]:
    """Every clash with data already in the stack, as one UserError; else the restore plan."""
    clashes = []
    # A fresh stack may already hold the empty schema (the sinks migrate on start): empty
    # tables are replaced, a row anywhere but in the migrations ledger is a clash.
    for database in manifest["components"]["postgres"]:
        tables = _pg_tables(settings.postgres_url_for(database)) or {}
        full = [t for t, has_rows in tables.items() if has_rows and t != "schema_migrations"]
        if full:
            clashes.append(f"database {database!r} already has rows in {', '.join(full[:5])}")
    tsdb = prometheus_data_dir(settings)
    if not tsdb.is_dir():
        clashes.append(f"no Prometheus TSDB at {tsdb}: start the stack first")
    blocks = [p.name for p in (path / "prometheus").iterdir() if p.is_dir()]
    clashes += [f"Prometheus block {b} already exists in {tsdb}" for b in blocks if (tsdb / b).exists()]
    repo_dir = opensearch_repository_dir(settings)
    if not repo_dir.is_dir():
        clashes.append(f"no OpenSearch snapshot repository at {repo_dir} (path.repo)")
    indices = manifest["components"]["opensearch"]
    for index in indices:
        code = requests.head(f"{settings.opensearch_url}/{index}{RESTORED_SUFFIX}", timeout=30).status_code
        if code == 200:
            clashes.append(f"log index {index}{RESTORED_SUFFIX} already exists")
    artifacts = mlflow_artifacts_dir(settings)
    if "mlflow_artifacts" in manifest["components"] and artifacts.is_dir() and any(artifacts.iterdir()):
        clashes.append(f"MLflow artifacts directory {artifacts} is not empty")
    if clashes:
        raise UserError("restore would overwrite data; restore into a fresh stack "
                        "(services.sh clean, then up): " + "; ".join(clashes))
    return {"blocks": blocks, "indices": indices, "tsdb": tsdb, "repo_dir": repo_dir}


def restore(path: Path, settings: settings_module.Settings | None = None) -> dict[str, Any]:
    """Restore backup `path` into the (fresh) stack of `settings`; what was restored."""
    settings = settings or settings_module.load()
    path = Path(path)
    started = time.monotonic()
    manifest = verify(path)
    plan = _preflight(path, manifest, settings)
    timings = {"verify": round(time.monotonic() - started, 2)}

    t0 = time.monotonic()
    for database in manifest["components"]["postgres"]:
        url = settings.postgres_url_for(database)
        tables = _pg_tables(url)
        if tables is None:
            _create_database(settings, database)
        elif tables:
            _drop_empty_tables(url, list(tables))
        dump = path / "postgres" / f"{database}.dump"
        # Extensions (pg_stat_statements) belong to the cluster's superuser and are created by
        # compose/bare/postgres.sh: restore every other entry of the dump's table of contents.
        toc = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True)
        if toc.returncode != 0:
            raise UserError(f"{dump} is no pg_dump archive: {toc.stderr.strip()[-300:]}")
        listing = Path(settings.run_dir) / f"restore-{database}.toc"
        listing.write_text("".join(line + "\n" for line in toc.stdout.splitlines()
                                   if " EXTENSION " not in line))
        try:
            _run(["pg_restore", "--exit-on-error", "--single-transaction", "--no-owner",
                  f"--use-list={listing}", f"--dbname={url}", str(dump)],
                 f"pg_restore of {database}")
        finally:
            listing.unlink()
    timings["postgres"] = round(time.monotonic() - t0, 2)

    # Prometheus loads blocks that appear in its data directory within a minute (its block
    # reload interval); no restart needed.
    t0 = time.monotonic()
    for block in plan["blocks"]:
        staging = plan["tsdb"] / f"{block}.tmp-restore"
        _copytree(path / "prometheus" / block, staging)
        _chown_like(staging, plan["tsdb"])
        staging.rename(plan["tsdb"] / block)
    timings["prometheus"] = round(time.monotonic() - t0, 2)

    t0 = time.monotonic()
    name = manifest["opensearch_snapshot"]
    location = plan["repo_dir"] / f"restore-{name}"
    if location.exists():
        shutil.rmtree(location)
    _copytree(path / "opensearch", location)
    _chown_like(location, plan["repo_dir"])
    repository = f"{settings.opensearch_url}/_snapshot/{REPOSITORY}-restore-{name}"
    _http("PUT", repository, "OpenSearch snapshot repository",
          json={"type": "fs", "settings": {"location": str(location), "readonly": True}})
    try:
        if plan["indices"]:
            _http("POST", f"{repository}/{name}/_restore?wait_for_completion=true",
                  "OpenSearch restore",
                  json={"indices": ",".join(plan["indices"]), "include_global_state": False,
                        "rename_pattern": "(.+)", "rename_replacement": f"$1{RESTORED_SUFFIX}"})
    finally:
        requests.delete(repository, timeout=60)
        shutil.rmtree(location, ignore_errors=True)
    timings["opensearch"] = round(time.monotonic() - t0, 2)

    if "mlflow_artifacts" in manifest["components"]:
        artifacts = mlflow_artifacts_dir(settings)
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copytree(path / "mlflow-artifacts", artifacts, dirs_exist_ok=True)
    changed = [n for n in manifest["components"]["dashboards"]
               if not (DASHBOARDS / n).is_file()
               or _sha256(DASHBOARDS / n) != _sha256(path / "dashboards" / n)]
    if changed:
        target = Path(settings.run_dir) / "restored-dashboards"
        shutil.copytree(path / "dashboards", target, dirs_exist_ok=True)
        log.warning("dashboards %s differ from compose/grafana/dashboards: the backup's copies "
                    "are in %s", ", ".join(changed), target)
    timings["total"] = round(time.monotonic() - started, 2)
    return {"databases": manifest["components"]["postgres"], "blocks": plan["blocks"],
            "indices": [f"{i}{RESTORED_SUFFIX}" for i in plan["indices"]],
            "dashboards_changed": changed, "seconds": timings}
