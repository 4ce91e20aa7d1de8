"""stgym/certs.py: the collectors' CA, server and client certificates are made once per
secrets folder (with the other credentials), private, and chain to the CA with the purposes
the mutual-TLS hop checks; the CA's key does not survive."""
from __future__ import annotations

import ssl
import stat
import subprocess

from stgym import certs, settings as settings_module


def openssl(*args: str) -> str:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_made_once_with_the_credentials_private_and_without_the_ca_key(tmp_path):
    s = settings_module.Settings(run_dir=str(tmp_path))
    created = settings_module.ensure_secrets(s)
    files = s.collector_tls_files
    assert set(files.values()) <= set(created)
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(p.name for p in files["ca"].parent.iterdir() if "collector" in p.name) == sorted(
        p.name for p in files.values()), "the CA key (or a temporary file) was left behind"
    before = {path: path.read_bytes() for path in files.values()}
    assert settings_module.ensure_secrets(s) == []
    assert {path: path.read_bytes() for path in files.values()} == before


def test_certificates_chain_to_the_ca_with_their_purposes(tmp_path):
    files = certs.files(tmp_path)
    certs.ensure_collector_certs(tmp_path)
    for role, purpose, usage in (("server", "sslserver", "TLS Web Server Authentication"),
                                 ("client", "sslclient", "TLS Web Client Authentication")):
        cert = str(files[f"{role}_cert"])
        assert openssl("verify", "-purpose", purpose, "-CAfile", str(files["ca"]), cert).strip() == f"{cert}: OK"
        extensions = openssl("x509", "-in", cert, "-noout", "-ext", "subjectAltName,extendedKeyUsage")
        assert f"DNS:{certs.SERVER_NAME}" in extensions and usage in extensions
    # Python's TLS stack takes them as the collectors do (key matches certificate).
    context = ssl.create_default_context(cafile=str(files["ca"]))
    context.load_cert_chain(files["client_cert"], files["client_key"])
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        files["server_cert"], files["server_key"])


def test_the_collector_scripts_get_every_path_from_the_settings(tmp_path):
    s = settings_module.Settings(run_dir=str(tmp_path))
    settings_module.ensure_secrets(s)
    shell = settings_module.as_shell(s)
    for label, path in s.collector_tls_files.items():
        assert f"STGYM_COLLECTOR_TLS_{label.upper()}='{path}'" in shell
    assert f"STGYM_COLLECTOR_TLS_SERVER_NAME='{certs.SERVER_NAME}'" in shell
