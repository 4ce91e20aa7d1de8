"""The collectors' certificates: a small certificate authority for the one hop that crosses
machines in plain OTLP otherwise, worker host's collector -> services host's collector (mutual
TLS, compose/collector/config.yaml and worker.yaml).

Generated once per secrets folder by `services.sh up` (stgym/settings.py ensure_secrets) with
the openssl CLI: the CA, a server certificate for the services host's collector and one client
certificate that every worker host's collector presents (the folder is copied to the workers,
like the passwords). The server certificate names no address but SERVER_NAME, which the
clients verify (server_name_override), so it stays valid wherever the services host moves.
The CA's key is deleted once both are signed: nobody can issue another certificate; a new set
is made by removing the CA certificate. Keys are mode 0600.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from stgym.errors import UserError

SERVER_NAME = "stgym-collector"
DAYS = 3650
# file of the folder -> (subject, extended key usage) of each certificate signed by the CA
LEAVES = {"collector-server": ("stgym services-host collector", "serverAuth"),
          "collector-client": ("stgym worker-host collector", "clientAuth")}
CA = "collector-ca.crt"


def files(folder: Path) -> dict[str, Path]:
    """ca, server_cert, server_key, client_cert, client_key -> their paths in `folder`."""
    return {"ca": folder / CA,
            "server_cert": folder / "collector-server.crt", "server_key": folder / "collector-server.key",
            "client_cert": folder / "collector-client.crt", "client_key": folder / "collector-client.key"}


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise UserError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def ensure_collector_certs(folder: Path) -> list[Path]:
    """Create the CA and both certificates unless the CA certificate exists; returns the new
    files. The CA certificate is moved in last, so a set cut short is made again whole."""
    paths = files(folder)
    if paths["ca"].exists():
        return []
    if shutil.which("openssl") is None:
        raise UserError("openssl is needed to create the collectors' certificates: "
                        "apt-get install openssl")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    with tempfile.TemporaryDirectory(dir=folder, prefix=".certs.") as tmp:
        work = Path(tmp)
        _openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", CA, "-days", str(DAYS),
                 "-subj", "/CN=stgym collector CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=work)
        for name, (subject, usage) in LEAVES.items():
            _openssl("req", "-new", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                     "-subj", f"/CN={subject}", cwd=work)
            (work / f"{name}.ext").write_text(
                f"subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage={usage}\n"
                "keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n")
            _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", CA, "-CAkey", "ca.key",
                     "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", str(DAYS),
                     "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=work)
        created = []
        for label, path in paths.items():
            if label != "ca":
                os.chmod(work / path.name, 0o600)
                os.replace(work / path.name, path)
                created.append(path)
        os.chmod(work / CA, 0o600)
        os.replace(work / CA, paths["ca"])
        return [*created, paths["ca"]]
