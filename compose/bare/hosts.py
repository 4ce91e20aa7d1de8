"""The hosts of a deployment over several machines — and the same hosts as network namespaces.

Usage:
  python compose/bare/hosts.py targets HOSTS        Prometheus file_sd targets of the workers of
                                                    HOSTS, into <run dir>/targets (Prometheus on
                                                    the services host watches those files)
  python compose/bare/hosts.py lab {up|down} HOSTS  (root) every host of HOSTS as a Linux network
                                                    namespace on one bridge (tests/ops/test_multihost.py)

HOSTS, one host a line: `name address role [workers]`, role `services`, `trainer` or `stream`;
`workers` is the number of trainer processes of a trainer host (default 1); `#` starts a comment.
A trainer host's workers serve /metrics on trainer_metrics_port, +1, ...; a stream host's worker
on stream_web_port (stgym/settings.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from stgym import settings as settings_module

ROLES = ("services", "trainer", "stream")
# Prometheus job of each worker role: the job names of compose/prometheus/prometheus.yml, which
# the alert and recording rules use.
JOBS = {"stream": "stream-processors", "trainer": "trainers"}


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    address: str
    role: str
    workers: int = 1


def read_hosts(path: str | Path) -> list[Host]:
    """The hosts of a HOSTS file (ValueError naming the line that is wrong)."""
    hosts = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) not in (3, 4) or fields[2] not in ROLES:
            raise ValueError(f"{path}:{number}: expected 'name address {'|'.join(ROLES)} "
                             f"[workers]', got {line!r}")
        workers = int(fields[3]) if len(fields) == 4 else 1
        hosts.append(Host(fields[0], fields[1], fields[2], workers))
    return hosts


def file_sd(hosts: list[Host], settings: settings_module.Settings) -> dict[str, list[dict]]:
    """Job name -> file_sd target groups, one group per host, labelled with its name."""
    groups: dict[str, list[dict]] = {job: [] for job in JOBS.values()}
    for host in hosts:
        if host.role == "stream":
            ports = [settings.stream_web_port]
        elif host.role == "trainer":
            ports = [settings.trainer_metrics_port + i for i in range(host.workers)]
        else:
            continue
        groups[JOBS[host.role]].append({"targets": [f"{host.address}:{p}" for p in ports],
                                        "labels": {"host": host.name}})
    return groups


def write_targets(hosts: list[Host], settings: settings_module.Settings) -> list[Path]:
    """<run dir>/targets/<job>.json for every worker job (written whole: Prometheus never reads
    half a file)."""
    out = Path(settings.run_dir) / "targets"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for job, groups in file_sd(hosts, settings).items():
        path = out / f"{job}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups, indent=2) + "\n")
        os.replace(tmp, path)
        written.append(path)
    return written


class Lab:
    """Hosts as network namespaces `<prefix>-<name>` with veth links to one bridge; addresses
    exist only inside the namespaces. Needs root (ip netns, unshare)."""

    def __init__(self, hosts: list[Host], prefix: str = "stg", prefix_len: int = 24) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.prefix, self.prefix_len = prefix, prefix_len
        self.bridge = f"{prefix}-br"

    def netns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def link(self, name: str) -> str:
        """The bridge side of a host's veth pair (interface names have at most 15 bytes)."""
        return f"{self.prefix}{list(self.hosts).index(name)}h"

    def up(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("link", "set", self.bridge, "up")
        for i, (name, host) in enumerate(self.hosts.items()):
            ns, outer, inner = self.netns(name), self.link(name), f"{self.prefix}{i}n"
            ip("netns", "add", ns)
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", ns)
            ip("link", "set", outer, "master", self.bridge, "up")
            ip("-n", ns, "addr", "add", f"{host.address}/{self.prefix_len}", "dev", inner)
            ip("-n", ns, "link", "set", inner, "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def command(self, name: str, argv: list[str]) -> list[str]:
        """argv run on host `name`: in its namespace, with its own hostname (the host field of
        every log record)."""
        return ["ip", "netns", "exec", self.netns(name), "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', name, *argv]

    def run(self, name: str, argv: list[str], env: dict, log: Path, **kwargs):
        """Start argv on host `name` (own session), output appended to `log`."""
        with open(log, "ab") as out:
            return subprocess.Popen(self.command(name, argv), env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, **kwargs)

    def pids(self, name: str) -> list[int]:
        result = subprocess.run(["ip", "netns", "pids", self.netns(name)], capture_output=True,
                                text=True)
        return [int(p) for p in result.stdout.split()]

    def kill(self, name: str) -> None:
        """SIGKILL every process of host `name` (a machine that dies)."""
        for pid in self.pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cut(self, name: str) -> None:
        """Its network link goes down."""
        ip("link", "set", self.link(name), "down")

    def down(self) -> None:
        """Kill every process of every host, delete the namespaces (and their veths) and the
        bridge; never fails on what is already gone."""
        for name in self.hosts:
            self.kill(name)
            subprocess.run(["ip", "netns", "del", self.netns(name)], capture_output=True)
            subprocess.run(["ip", "link", "del", self.link(name)], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "targets":
        for path in write_targets(read_hosts(argv[1]), settings_module.load()):
            print(path)
        return 0
    if len(argv) == 3 and argv[0] == "lab" and argv[1] in ("up", "down"):
        lab = Lab(read_hosts(argv[2]))
        lab.up() if argv[1] == "up" else lab.down()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
