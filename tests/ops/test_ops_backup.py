"""Backups without services: a corrupt, partial or foreign backup is a clear error before
anything is touched; list and prune by the manifests."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stgym import backup
from stgym import settings as settings_module
from stgym.errors import ServiceUnavailable, UserError


def fake_backup(root: Path, name: str, created_at: str) -> Path:
    """A directory shaped like `stgym backup create` output, with a correct manifest."""
    path = root / name
    (path / "postgres").mkdir(parents=True)
    (path / "postgres" / "stgym.dump").write_bytes(b"PGDMP fake dump")
    (path / "dashboards").mkdir()
    (path / "dashboards" / "overview.json").write_text("{}")
    files = [{"path": p.relative_to(path).as_posix(), "size": p.stat().st_size,
              "sha256": backup._sha256(p)} for p in sorted(path.rglob("*")) if p.is_file()]
    (path / backup.MANIFEST).write_text(json.dumps({
        "format": backup.FORMAT, "name": name, "created_at": created_at,
        "components": {"postgres": ["stgym"], "dashboards": ["overview.json"]},
        "size_bytes": sum(f["size"] for f in files), "files": files}))
    return path


def nowhere(tmp_path: Path) -> settings_module.Settings:
    """Settings of a stack that does not exist: any attempt to reach it would fail differently."""
    return settings_module.Settings(run_dir=str(tmp_path / "no-stack"), backup_dir=str(tmp_path / "b"),
                                    postgres_port=1, prometheus_port=1, opensearch_port=1,
                                    postgres_password="x", postgres_reader_password="x")


def test_a_good_backup_verifies(tmp_path):
    path = fake_backup(tmp_path, "stgym-1", "2026-01-01T00:00:00+00:00")
    assert backup.verify(path)["name"] == "stgym-1"


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "postgres" / "stgym.dump").write_bytes(b"PGDMP fake dumq"), "does not match its sha256"),
    (lambda p: (p / "postgres" / "stgym.dump").write_bytes(b"PGDMP"), "has 5 bytes, the manifest says 15"),
    (lambda p: (p / "dashboards" / "overview.json").unlink(), "incomplete: dashboards/overview.json is missing"),
    (lambda p: (p / backup.MANIFEST).unlink(), "manifest.json is missing"),
    (lambda p: (p / backup.MANIFEST).write_text("{not json"), "is unreadable"),
    (lambda p: (p / backup.MANIFEST).write_text('{"format": 99, "files": []}'), "not a format-1 stgym backup"),
])
def test_corrupt_or_partial_backup_is_refused_before_anything_is_touched(tmp_path, damage, message):
    path = fake_backup(tmp_path, "stgym-1", "2026-01-01T00:00:00+00:00")
    damage(path)
    with pytest.raises(UserError, match=message):
        backup.restore(path, nowhere(tmp_path))
    assert not (tmp_path / "no-stack").exists()


def test_unfinished_backup_is_refused(tmp_path):
    path = fake_backup(tmp_path, "stgym-1.partial", "2026-01-01T00:00:00+00:00")
    with pytest.raises(UserError, match=r"unfinished backup \(\.partial\)"):
        backup.restore(path, nowhere(tmp_path))


def test_list_and_prune_keep_the_newest_complete_backups(tmp_path):
    settings = nowhere(tmp_path)
    root = Path(settings.backup_dir)
    for i, day in enumerate(("03", "01", "02")):
        fake_backup(root, f"stgym-{i}", f"2026-01-{day}T00:00:00+00:00")
    (root / "stgym-9.partial").mkdir()
    listed = backup.list_backups(settings)
    assert [(i.path.name, bool(i.manifest)) for i in listed] == [
        ("stgym-9.partial", False), ("stgym-1", True), ("stgym-2", True), ("stgym-0", True)]
    assert [p.name for p in backup.prune(1, settings)] == ["stgym-1", "stgym-2"]
    assert sorted(p.name for p in root.iterdir()) == ["stgym-0", "stgym-9.partial"]
    with pytest.raises(UserError, match="--keep must be at least 1, got 0"):
        backup.prune(0, settings)


def test_create_refuses_an_existing_target(tmp_path):
    (tmp_path / "there").mkdir()
    with pytest.raises(UserError, match="already exists"):
        backup.create(tmp_path / "there", nowhere(tmp_path))


def test_a_failed_backup_leaves_nothing_behind(tmp_path):
    with pytest.raises(ServiceUnavailable, match="PostgreSQL does not answer"):
        backup.create(tmp_path / "b1", nowhere(tmp_path))
    assert list(tmp_path.iterdir()) == []
