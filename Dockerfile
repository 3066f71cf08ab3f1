# syntax=docker/dockerfile:1
# sealgate admission webhook image (SPEC §7). Build from the repository root:
#   docker build -t registry.example.com/platform/sealgate:0.1.0 .
# The chart runs it with a read-only root filesystem (an emptyDir at /tmp) as UID 65532.

# --- builder: the sealgate wheel plus the wheels of every dependency --------------------------
FROM python:3.11-slim AS builder

WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
# Wheels only: the runtime stage installs offline from /wheels and needs no compiler.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="sealgate" \
      org.opencontainers.image.description="Kubernetes admission webhook that admits only signed, scanned container images" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

# The wheels are bind-mounted, never copied: no layer keeps them. pip itself is removed
# afterwards, so the final image holds the interpreter and sealgate's dependencies only.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels "sealgate==${VERSION}" \
    && python -m pip uninstall --yes pip setuptools wheel \
    && sealgate serve --help > /dev/null

USER 65532:65532
WORKDIR /tmp
EXPOSE 8443
ENTRYPOINT ["sealgate", "serve"]
