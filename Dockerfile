# syntax=docker/dockerfile:1
#
# syncd container image (see compose.yaml for syncd with PostgreSQL).
#
#   docker build -t syncd .
#   docker run -d --name syncd -v syncd-state:/var/lib/syncd \
#     -v "$PWD/syncd.toml:/etc/syncd/syncd.toml:ro" -e BERKSHIRE_TOKEN -e HUBSPOT_TOKEN \
#     -p 127.0.0.1:9464:9464 syncd
#
# Everything comes from the mounted config (SYNCD_CONFIG below names its path): the image sets
# no SYNCD_* key, so nothing here can override the file's database or health address.
# Secrets belong in files (Docker secrets under /run/secrets) named by the config's
# `<name>_file` keys, or in variables named by `<name>_env`; never in the image.
# tests/integration/test_packaging.py lints this file and repeats its build and install steps.

# Both stages use the same base so the wheel is built by the interpreter that will run it.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# Only what the wheel is built from (see .dockerignore): code edits elsewhere keep the cache.
# The wheel leaves out the simulators, emulators and contract suite (syncd/sandbox,
# syncd/contract, connectors/*/*/emulator): they ship only in syncd[sandbox] (sandbox/).
COPY pyproject.toml README.md ./
COPY syncd/ syncd/
COPY connectors/ connectors/
COPY migrations/ migrations/
# --no-deps: the wheel alone; its dependencies are resolved when it is installed below.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="syncd" \
      org.opencontainers.image.description="Keeps a CRM in step with a Berkshire Receptionists answering-service account" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"

# A venv keeps syncd's dependencies apart from the base image's own packages. SYNCD_CONFIG is
# the config's path (a documented variable, never read as a key).
ENV PATH=/opt/syncd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SYNCD_CONFIG=/etc/syncd/syncd.toml

# The wheel is bind-mounted from the build stage rather than copied, so it leaves no layer.
# The [postgres] extra brings psycopg (with its own libpq): PostgreSQL works out of the box.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    python -m venv /opt/syncd \
    && set -- /dist/syncd-*.whl \
    && /opt/syncd/bin/pip install --no-cache-dir "$1[postgres]"

# A fixed uid/gid, so volume ownership and Kubernetes runAsUser can be set to match.
RUN groupadd --system --gid 10001 syncd \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/syncd \
       --shell /usr/sbin/nologin syncd \
    && mkdir -p /var/lib/syncd /etc/syncd \
    && chown syncd:syncd /var/lib/syncd

WORKDIR /var/lib/syncd
# The SQLite state store, when the config uses one (database_url = "sqlite:////var/lib/syncd/
# syncd.db"); it must outlive the container (delivery history = no duplicates).
VOLUME ["/var/lib/syncd"]
USER 10001:10001

# /healthz, /readyz and /metrics, on the config's health_address: set it to "0.0.0.0:9464" so a
# scraper outside the container can reach it.
EXPOSE 9464
# `syncd health` reads the health address from the same config and asks /readyz: the container
# is healthy only when the daemon is ready (database reachable, last cycle recent and clean);
# the start period leaves a first sync of a large backlog time to finish its first cycle.
HEALTHCHECK --interval=30s --timeout=10s --start-period=5m --retries=3 \
    CMD ["syncd", "health"]

# syncd runs as PID 1, where the kernel ignores signals without a handler: the daemon
# installs one for SIGTERM (docker stop) and shuts down cleanly on it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["syncd"]
CMD ["run"]
