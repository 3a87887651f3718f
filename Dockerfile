# journeystream worker and simulator image.
#   docker build -t journeystream .
#   docker run --rm journeystream config
# The same image runs `journeystream worker` (default) and `journeystream simulate ...`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Package metadata first, then the code: the dependency layer is rebuilt only when they change.
COPY pyproject.toml README.md ./
COPY src ./src
COPY schemas ./schemas

# rocksdict gives Faust its rocksdb:// table store (JOURNEYSTREAM_STORE=rocksdb://), used by
# the Kubernetes StatefulSet; build with --build-arg WITH_ROCKSDB=0 to leave it out.
ARG WITH_ROCKSDB=1
RUN pip install . \
    && if [ "$WITH_ROCKSDB" = "1" ]; then pip install "faust-streaming[rocksdict]"; fi \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin journeystream \
    && mkdir -p /data \
    && chown journeystream /data

# The package is installed (not editable): tell the migrations where the DDL is. Listen on
# every interface inside the container; /data holds Faust tables (a volume in production).
ENV JOURNEYSTREAM_SCHEMAS_DIR=/app/schemas/clickhouse \
    JOURNEYSTREAM_DATA_DIR=/data \
    JOURNEYSTREAM_HTTP_HOST=0.0.0.0 \
    JOURNEYSTREAM_HTTP_PORT=6066

USER journeystream
VOLUME ["/data"]
EXPOSE 6066

# No HEALTHCHECK here: the same image also runs the simulator, which serves no HTTP.
# docker-compose.yml and the Kubernetes probes check /ready and /health of the worker.

ENTRYPOINT ["journeystream"]
CMD ["worker"]
