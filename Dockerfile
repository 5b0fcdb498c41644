# syntax=docker/dockerfile:1
# One image for the operator and the sidecar; the entry point is `sloguard`:
#   operator:  sloguard operator --all-namespaces
#   sidecar:   sloguard sidecar --config /etc/sloguard/sidecar.json
# The base is pinned by tag; pin it by digest too (python:3.11.11-slim-bookworm@sha256:...) in a release
# pipeline that can resolve it.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/sloguard
COPY pyproject.toml README.md ./
COPY sloguard/ sloguard/
COPY api/ api/
COPY sidecar/ sidecar/
COPY operator/ operator/
COPY sim/ sim/
COPY bench/ bench/
COPY predictor/ predictor/
RUN /opt/sloguard/bin/pip install . \
    && /opt/sloguard/bin/sloguard --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="sloguard" \
      org.opencontainers.image.description="SLOGuard operator and sidecar" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/sloguard/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/sloguard /opt/sloguard
# 65532 is the conventional "nonroot" id; the manifests run it with a read-only root filesystem.
RUN groupadd --system --gid 65532 sloguard \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sloguard
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["sloguard"]
CMD ["--help"]
