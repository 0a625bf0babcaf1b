"""The root of the service's own exceptions.

`ServiceError` is every error the service raises on purpose; `UserError` the ones the person or system running a
command can fix, whose message says how. The CLI prints a UserError as one line and exits 2 (app.tools.cli); any
other exception is a bug and keeps its traceback. Errors of the libraries underneath (confluent-kafka's
KafkaException) are not ours to subclass; the CLI names the one it treats as the user's.
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error the service raises on purpose."""


class UserError(ServiceError):
    """An error the user can fix: a setting, an argument, a file, a broker that does not answer. The message says
    what to change."""


EXIT_CONFIGURATION_ERROR = 78
"""Exit status of a worker or ingest process that cannot start because of its configuration: refused credentials,
missing topics, no broker within AVAILABILITY_BROKER_WAIT_SECONDS (EX_CONFIG)."""
