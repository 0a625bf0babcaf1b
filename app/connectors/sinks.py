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

import base64
import http.client
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Protocol

from app.connectors.view import AvailabilityChange
from app.errors import ServiceError

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"


class SinkError(ServiceError):
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

    def __repr__(self) -> str:
        return "LogSink()"

    def deliver(self, change: AvailabilityChange) -> None:
        self._log.log(self._level, "%s %s v%d quantity=%d status=%s%s", change.channel, change.key, change.version,
                      change.quantity, change.status, " (snapshot)" if change.snapshot else "")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirected POST would be replayed as a GET by urllib: treat a redirect as a failure instead.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        return None


class WebhookSink:
    """POSTs each change as JSON (`AvailabilityChange.as_json()`) to `url`, with an `Idempotency-Key` header
    (`key@version`) and `headers` (e.g. `Authorization`, from AVAILABILITY_WEBHOOK_HEADERS). Any 2xx status is
    acceptance; anything else, a timeout or a refused connection raises `SinkUnavailableError`. Standard library
    only, one request at a time.

    Credentials never reach a log line or an error: messages name the URL as `redacted_url(url)`, and any text that
    repeats a header value, the URL's user info or a secret-looking query value is scrubbed before it is raised.
    User info in the URL (`https://user:password@host/`) is sent as HTTP Basic authentication; prefer the headers,
    since a URL is on the command line, where other users of the machine can read it."""

    def __init__(self, url: str, *, timeout_seconds: float = 10.0, headers: dict[str, str] | None = None) -> None:
        self.url = redacted_url(url)  # the only form of the URL that is ever shown
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http:// or https://, got {self.url!r}")
        try:
            if not urllib.parse.urlsplit(url).hostname:
                raise ValueError("no host")
            urllib.parse.urlsplit(url).port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError(f"webhook url {self.url!r} has no valid host and port") from None
        self._request_url, basic_credentials = _without_user_info(url)
        self.timeout_seconds = timeout_seconds
        given = dict(headers or {})
        if basic_credentials is not None:
            if any(name.lower() == "authorization" for name in given):
                raise ValueError(f"webhook url {self.url} has user info and an Authorization header is set too; "
                                 "give one of them")
            given["Authorization"] = "Basic " + base64.b64encode(basic_credentials.encode()).decode("ascii")
        self._header_names = sorted(given)
        self._headers = {"Content-Type": "application/json", **given}
        self._secrets = _secrets_of(url, given)
        self._opener = urllib.request.build_opener(_NoRedirects)

    def __repr__(self) -> str:
        return f"WebhookSink(url={self.url!r}, headers={self._header_names}, timeout_seconds={self.timeout_seconds:g})"

    def deliver(self, change: AvailabilityChange) -> None:
        body = json.dumps(change.as_json(), separators=(",", ":")).encode()
        request = urllib.request.Request(
            self._request_url, data=body, method="POST",
            headers={**self._headers, IDEMPOTENCY_HEADER: change.identity},
        )
        try:
            with self._opener.open(request, timeout=self.timeout_seconds) as response:
                status = response.status
                response.read()
        except urllib.error.HTTPError as error:  # non-2xx answers (and refused redirects) arrive as HTTPError
            error.close()
            raise self._unavailable(f"HTTP {error.code} {error.reason}") from None
        except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out, malformed answer
            reason = getattr(error, "reason", None) or error
            raise self._unavailable(f"{type(error).__name__}: {reason}") from None
        if not 200 <= status < 300:
            raise self._unavailable(f"HTTP {status}")

    def _unavailable(self, detail: str) -> SinkUnavailableError:
        return SinkUnavailableError(f"POST {self.url}: {scrub(detail, self._secrets)}")


# ------------------------------------------------------------------------------------------------------ redaction
REDACTED = "***"
# Query parameters that carry credentials by name (?token=, ?api_key=, ?sig=, ?password=, ?X-Amz-Signature=...).
_SECRET_PARAMETER_NAME = re.compile(r"token|key|secret|pass|pwd|sig|auth|credential|session|code", re.IGNORECASE)
# A value that looks like a credential whatever its name: long, one word, letters and digits mixed.
_TOKEN_LIKE_VALUE = re.compile(r"(?=[^&]*[0-9])(?=[^&]*[A-Za-z])[A-Za-z0-9._~+/=%-]{16,}")


def redacted_url(url: str) -> str:
    """`url` fit for a log line: user info replaced by `***`, and so is every path segment that looks like a
    credential (a hook URL such as `/services/T0/B0/<secret>` carries one) and the value of every query parameter
    named like one or looking like one; no fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # not even parseable: show only what cannot be a secret
        parts = None
    if parts is None or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,15}", parts.scheme) or not parts.netloc:
        return f"{parts.scheme}://{REDACTED}" if parts is not None and parts.scheme.isalpha() else REDACTED
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{REDACTED}@{host}" if "@" in parts.netloc else host
    path = "/".join(REDACTED if _TOKEN_LIKE_VALUE.fullmatch(segment) else segment
                    for segment in parts.path.split("/"))
    pairs = []
    for pair in parts.query.split("&") if parts.query else ():
        name, has_value, value = pair.partition("=")
        if has_value and _is_secret_parameter(name, value):
            value = REDACTED
        pairs.append(f"{name}={value}" if has_value else name)
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, "&".join(pairs), ""))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret (longest first) replaced by `***`."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def _is_secret_parameter(name: str, value: str) -> bool:
    return bool(_SECRET_PARAMETER_NAME.search(urllib.parse.unquote_plus(name))) or bool(
        _TOKEN_LIKE_VALUE.fullmatch(value))


def _without_user_info(url: str) -> tuple[str, str | None]:
    """(the URL without user info, `user:password` decoded, or None when there is none)."""
    parts = urllib.parse.urlsplit(url)
    user_info, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), urllib.parse.unquote(user_info)


def _secrets_of(url: str, headers: dict[str, str]) -> set[str]:
    """Every string that must not appear in a message: header values (and their credential part), the URL's user
    info and secret query values, raw and percent-decoded."""
    secrets: set[str] = set()
    for value in headers.values():
        secrets.add(value)
        secrets.add(value.partition(" ")[2])  # `Bearer abc`: the credential alone too
    parts = urllib.parse.urlsplit(url)
    user_info, at, _ = parts.netloc.rpartition("@")
    if at:
        password = user_info.partition(":")[2]
        secrets.update({user_info, urllib.parse.unquote(user_info), password, urllib.parse.unquote(password)})
    for pair in parts.query.split("&") if parts.query else ():
        name, has_value, value = pair.partition("=")
        if has_value and _is_secret_parameter(name, value):
            secrets.update({value, urllib.parse.unquote_plus(value)})
    secrets.update(segment for segment in parts.path.split("/") if _TOKEN_LIKE_VALUE.fullmatch(segment))
    return {secret for secret in secrets if secret.strip()}
