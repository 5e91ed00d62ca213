# One small image for both entrypoints: `onion-operator` (the Helm chart's Deployment) and
# `onion-router` (the Deployment the operator renders for each Onion). No model engine inside:
# model servers run in their own engine images (TGI, vLLM, llama.cpp). It does carry what the
# learned escalation policies need: the `learned` extra (numpy, tokenizers, safetensors) and the
# prompt embedder's files (all-MiniLM-L6-v2, 91 MB, sha256-checked) at the router config's
# default `embedder` path, /opt/onion-of-experts/embedders/all-minilm-l6-v2 (docs/learned.md).
# Build: `make image`: docker or podman, or where no engine runs (this project's machines and
# CI) buildah from a debootstrap'd bookworm base passed as PYTHON_IMAGE (docs/install.md);
# `make test-image` runs the result.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract/ contract/
COPY operator/ operator/
COPY router/ router/
COPY lab/onion_lab/__init__.py lab/onion_lab/paths.py lab/onion_lab/models.py lab/onion_lab/embedder_files.py lab/onion_lab/
# A virtualenv copied whole into the final stage: no compilers or pip caches there.
RUN python -m venv /opt/onion \
 && /opt/onion/bin/pip install --no-compile '.[cluster,learned]' \
 && /opt/onion/bin/onion-operator --help >/dev/null \
 && /opt/onion/bin/onion-router --help >/dev/null \
 && PYTHONPATH=/src/lab /opt/onion/bin/python -m onion_lab.embedder_files --into /opt/onion-of-experts/embedders

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="onion-of-experts" \
      org.opencontainers.image.description="Onion operator and router: an always-on core LLM, outer layers woken on demand" \
      org.opencontainers.image.source="https://github.com/onion-of-experts/onion-of-experts" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /opt/onion /opt/onion
COPY --from=build /opt/onion-of-experts /opt/onion-of-experts
# Numeric non-root user (65532, as the chart and the router pods set runAsUser) and no writable
# paths in the image: the pods run with a read-only root filesystem.
ENV PATH=/opt/onion/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080
CMD ["onion-operator", "--all-namespaces"]
