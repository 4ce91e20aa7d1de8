"""Create or update the SCRAM-SHA-512 credential of the Kafka SASL listener.

Usage: python compose/bare/kafka_users.py   (compose/bare/kafka.sh runs it when
secrets_dir/kafka.password is new or changed). It connects over the loopback PLAINTEXT
listener, the only one that needs no credential; user and password come from stgym.settings.
"""
from __future__ import annotations

import dataclasses
import sys

from kafka import KafkaAdminClient
from kafka.admin import UserScramCredentialUpsertion

from stgym import settings as settings_module


def main() -> int:
    s = settings_module.load()
    local = dataclasses.replace(s, kafka_security_protocol="PLAINTEXT")
    admin = KafkaAdminClient(bootstrap_servers=local.kafka_bootstrap, client_id="stgym-users",
                             request_timeout_ms=10_000, bootstrap_timeout_ms=10_000)
    try:
        password = s.secret(settings_module.KAFKA_PASSWORD, s.kafka_sasl_password)
        errors = admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(s.kafka_sasl_username, "SCRAM-SHA-512", password)])
    finally:
        admin.close()
    failed = {user: error for user, error in errors.items() if error}
    if failed:
        print(f"kafka_users: {failed}", file=sys.stderr)
        return 1
    print(f"kafka_users: SCRAM-SHA-512 credential of {s.kafka_sasl_username!r} set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
