# syntax=docker/dockerfile:1.7
# Plait's image: one image for `plait operator`, `plait api` and `plait migrate`.
#
#   docker build -t ghcr.io/plait-dev/plait:0.1.0 .
#
# Two stages: the builder makes a wheel of Plait and installs it with its dependencies into
# a virtualenv; the final stage copies only that virtualenv onto a clean slim Python, so no
# compiler, build frontend or source tree ends up in the image. Versions are pinned here
# (base image, pip, build); Plait's own dependencies follow pyproject.toml.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m pip install pip==25.2 build==1.3.0
# Metadata and sources only (see .dockerignore): tests, docs and charts stay out.
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m build --wheel --outdir /wheels . \
    && python -m venv /opt/plait \
    && /opt/plait/bin/pip install pip==25.2 \
    && /opt/plait/bin/pip install /wheels/plait-*.whl \
    && /opt/plait/bin/pip uninstall --yes pip \
    # The root filesystem is read-only at run time: compile the bytecode now.
    && /opt/plait/bin/python -m compileall -q /opt/plait

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="plait" \
      org.opencontainers.image.description="Kubernetes-native event-driven workflow orchestrator" \
      org.opencontainers.image.source="https://github.com/plait-dev/plait" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
ENV PATH=/opt/plait/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=builder /opt/plait /opt/plait
# A numeric non-root user (the "nonroot" UID of distroless images), so Kubernetes can check
# runAsNonRoot without a passwd entry.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8000 8080 9443
ENTRYPOINT ["plait"]
CMD ["--help"]
