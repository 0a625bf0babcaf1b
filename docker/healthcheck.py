"""Container health check of a worker: healthy when its web server answers HTTP on the configured port.

Usage: python docker/healthcheck.py [PATH]   (default PATH "/": Faust's index page)
Exit 0 when the answer's status is below 500, 1 otherwise (Docker's contract for health checks).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from app.settings import Settings


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "/"
    url = f"http://127.0.0.1:{Settings().web_port}{path}"  # the worker binds 0.0.0.0 in the container
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1
    return 0 if status < 500 else 1


if __name__ == "__main__":
    sys.exit(main())
