# The availability service: one image for the workers and the topic-creation job (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/availability

# Sources first, then one install. The schemas are read from avro/ next to the package, so the source tree stays
# in the image and the project is installed from it in place.
COPY pyproject.toml README.md ./
COPY app ./app
COPY tables ./tables
COPY avro ./avro
COPY docker/healthcheck.py ./docker/healthcheck.py
RUN pip install --editable . \
    && useradd --system --create-home --uid 10001 availability \
    && mkdir -p /var/lib/availability \
    && chown availability:availability /var/lib/availability

USER availability

# Local state (RocksDB tables) lives in a directory the service user owns; the web server must be reachable from
# other containers (metrics scraping, table routing between workers).
ENV AVAILABILITY_DATA_DIR=/var/lib/availability \
    AVAILABILITY_WEB_HOST=0.0.0.0 \
    AVAILABILITY_WEB_PORT=6066

EXPOSE 6066

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
    CMD ["python", "docker/healthcheck.py"]

CMD ["availability", "worker"]
