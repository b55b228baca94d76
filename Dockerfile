# One image for every Doorward process (the command picks which): docker-compose.yml and
# deploy/k8s run it. Runs as an unprivileged user (10001) and writes nothing outside /tmp and
# its mounted volumes, so the root filesystem can be read-only. The web console is not built
# here (no Node.js); build it with `make console` first to have the gateway serve it.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir "uv>=0.5,<1"

WORKDIR /app
COPY . .
# The locked dependencies and the generated gRPC stubs (uv.lock, proto/), as `make up` builds them.
# The folders compose mounts volumes on belong to the user, so a fresh volume does too.
RUN make venv \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin doorward \
    && mkdir -p /run/doorward /run/doorward-tls /run/openbao-keys /var/lib/doorward/identity-keys \
    && chown 10001:10001 /run/doorward /run/doorward-tls /run/openbao-keys \
        /var/lib/doorward/identity-keys \
    && chmod 0700 /run/doorward /run/doorward-tls /run/openbao-keys /var/lib/doorward/identity-keys

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/app/.venv/bin:$PATH
USER 10001:10001
CMD ["doorward", "--help"]
