"""A local webhook endpoint for the tests: records the JSON it accepts; can be told to answer 503 for a while."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookEndpoint:
    """`with WebhookEndpoint() as endpoint:` serves on 127.0.0.1 in a thread; always shut down on exit."""

    def __init__(self) -> None:
        self.accepted: list[dict] = []
        self.idempotency_keys: list[str] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.refused = 0
        self.down = False
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with endpoint._lock:
                    endpoint.authorizations.append(self.headers.get("Authorization"))
                    if endpoint.down:
                        endpoint.refused += 1
                        status = 503
                    else:
                        endpoint.accepted.append(json.loads(body))
                        endpoint.idempotency_keys.append(self.headers.get("Idempotency-Key", ""))
                        status = 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-endpoint", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/availability"

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.accepted)

    def __enter__(self) -> WebhookEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
