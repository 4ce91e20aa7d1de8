"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input (a parameter, a URL, a file) named with what was expected."""

    exit_code = 2


class ServiceUnavailable(UserError):
    """A service the command needs (Kafka, PostgreSQL, OpenSearch, ...) does not answer."""

    exit_code = 3
