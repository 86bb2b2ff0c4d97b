# blobgate: the gRPC storage gateway. Build: docker build -t blobgate .
# (buildah or podman: add --format docker, or the HEALTHCHECK is dropped).
# Run: docker run -p 50051:50051 -e BLOBGATE_S3_ENDPOINT=... -e AWS_ACCESS_KEY_ID=... \
#   -v /etc/blobgate/tls:/tls:ro -e BLOBGATE_TLS_CERT_FILE=/tls/server.crt \
#   -e BLOBGATE_TLS_KEY_FILE=/tls/server.key blobgate
# It listens on every interface, so it refuses to start without TLS files
# unless told BLOBGATE_INSECURE=true (docs/security.md).
# The image holds blobgate[server] (the gateway, its probe and the CLI), not
# blobgate[embedded]: --dev's in-memory S3 is for a development machine.

FROM python:3.11-slim AS build
WORKDIR /src
# The build backend from its hash-checked lock, used as installed (no
# isolated build environment fetching an unpinned one): the image is built
# from the lock files alone.
COPY requirements/build.lock /tmp/build.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/build.lock
COPY pyproject.toml README.md LICENSE ./
COPY protos ./protos
COPY server ./server
COPY client ./client
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BLOBGATE_LISTEN=0.0.0.0:50051 \
    BLOBGATE_METRICS_LISTEN=0.0.0.0:9464 \
    BLOBGATE_HEALTH_LISTEN=127.0.0.1:50052 \
    BLOBGATE_LOG_FORMAT=json
# The gateway's dependencies, `pip install 'blobgate[server]'` resolved to the
# versions that were tested (requirements/server.lock, hash-checked), then
# blobgate alone, without dependencies (a layer of its own: a change to the
# code alone reuses the dependencies').
COPY requirements/server.lock /tmp/server.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/server.lock \
    && rm /tmp/server.lock \
    && groupadd --gid 10001 blobgate \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home \
        --shell /usr/sbin/nologin blobgate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl \
    && rm -rf /wheels
USER 10001:10001
# gRPC, and Prometheus metrics (/metrics).
EXPOSE 50051 9464
# SERVING only while S3 answers; NOT_SERVING from the start of a graceful shutdown.
# The probe asks the plaintext health-only listener on loopback
# (BLOBGATE_HEALTH_LISTEN), so it needs no client certificate in mTLS mode;
# --plaintext makes it ignore the server's BLOBGATE_TLS_* variables, which it
# inherits and would otherwise take as its own (docs/operations.md).
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["blobgate-probe", "--address", "127.0.0.1:50052", "--timeout", "4", "--plaintext"]
# Exec form: the server is PID 1's only process and receives SIGTERM itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["blobgate-server"]
