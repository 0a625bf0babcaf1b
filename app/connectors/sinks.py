"""Sinks: where a connector hands each availability change. Copy one to feed a new selling channel.

The contract is one method, `deliver(change) -> None`:
- return normally once the channel has accepted the change (the connector then commits past it);
- raise a `SinkError` when it has not (the connector retries the SAME change, with backoff and a circuit breaker,
  and delivers nothing after it until it succeeds);
- any other exception is a bug in the sink: it stops the connector, which resumes from its committed offsets.
A change may be delivered more than once (at-least-once: a crash between the channel's acceptance and the commit);
`change.identity` (`key@version`) is the same on every delivery, so a receiver can apply it once.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from typing import Protocol

from app.connectors.view import AvailabilityChange

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"


class SinkError(Exception):
    """The channel did not accept a change. The connector retries it; nothing is skipped."""


class SinkUnavailableError(SinkError):
    """The channel's endpoint could not be reached, timed out, or answered with a non-2xx status. If it lasts,
    check the endpoint URL and the channel's status page; the connector resumes by itself once it answers."""


class Sink(Protocol):
    def deliver(self, change: AvailabilityChange) -> None: ...


class LogSink:
    """Writes each change as one log line: for trying a connector out, and the smallest example of a sink."""

    def __init__(self, log: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self._log = log or logger
        self._level = level

    def deliver(self, change: AvailabilityChange) -> None:
        self._log.log(self._level, "%s %s v%d quantity=%d status=%s%s", change.channel, change.key, change.version,
                      change.quantity, change.status, " (snapshot)" if change.snapshot else "")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirected POST would be replayed as a GET by urllib: treat a redirect as a failure instead.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        return None


class WebhookSink:
    """POSTs each change as JSON (`AvailabilityChange.as_json()`) to `url`, with an `Idempotency-Key` header
    (`key@version`). Any 2xx status is acceptance; anything else, a timeout or a refused connection raises
    `SinkUnavailableError`. Standard library only, one request at a time."""

    def __init__(self, url: str, *, timeout_seconds: float = 10.0, headers: dict[str, str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http:// or https://, got {url!r}")
        self.url = url
        self.timeout_seconds = timeout_seconds
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._opener = urllib.request.build_opener(_NoRedirects)

    def deliver(self, change: AvailabilityChange) -> None:
        body = json.dumps(change.as_json(), separators=(",", ":")).encode()
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={**self._headers, IDEMPOTENCY_HEADER: change.identity}
        )
        try:
            with self._opener.open(request, timeout=self.timeout_seconds) as response:
                status = response.status
                response.read()
        except urllib.error.HTTPError as error:  # non-2xx answers (and refused redirects) arrive as HTTPError
            error.close()
            raise SinkUnavailableError(f"POST {self.url}: HTTP {error.code} {error.reason}") from None
        except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out, malformed answer
            reason = getattr(error, "reason", None) or error
            raise SinkUnavailableError(f"POST {self.url}: {type(error).__name__}: {reason}") from None
        if not 200 <= status < 300:
            raise SinkUnavailableError(f"POST {self.url}: HTTP {status}")
