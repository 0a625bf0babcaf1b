"""A stand-in HTTP server on a thread, for the tests that need one (a schema registry, a worker's API or /metrics)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from socketserver import BaseServer


@contextmanager
def serving(server: BaseServer) -> Iterator[BaseServer]:
    """Serves `server` on a daemon thread until the block ends, then shuts it down and closes its socket."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
