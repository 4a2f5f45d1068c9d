# syntax=docker/dockerfile:1
#
# deploykit serving images: `deploykit serve /models` over the KServe v2 HTTP protocol on port 8000.
#
#   docker build --target cpu -t deploykit:cpu .      # python slim, ONNX Runtime on the CPU
#   docker build --target gpu -t deploykit:gpu .      # NVIDIA's TensorRT image: TensorRT plans + ONNX Runtime GPU
#
#   docker run --rm -p 8000:8000 -v "$PWD/models:/models:ro" deploykit:cpu
#   docker run --rm --gpus all -p 8000:8000 -v "$PWD/models:/models:ro" deploykit:gpu
#
# Flags after the image name go to `deploykit serve`, e.g. `deploykit:cpu --batching on --max-queue-delay-us 2000`.
# A TensorRT plan loads only with the TensorRT version (and GPU model) that built it: pick TENSORRT_TAG so that
# the image's TensorRT is the one `deploykit build` used (NVIDIA's container release notes list the version).

ARG PYTHON_VERSION=3.11
ARG TENSORRT_TAG=25.10

# ------------------------------------------------------------------------------------------ gpu
FROM nvcr.io/nvidia/tensorrt:${TENSORRT_TAG}-py3 AS gpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1
WORKDIR /opt/deploykit
COPY pyproject.toml constraints.txt README.md ./
COPY deploykit ./deploykit
# The image's own TensorRT Python package satisfies the trt extra. onnxruntime (a core dependency) and
# onnxruntime-gpu install the same `onnxruntime` package, so the CPU build is removed and the GPU one put back.
RUN python3 -m pip install -c constraints.txt ".[trt,gpu,serve]" \
    && python3 -m pip uninstall -y onnxruntime \
    && python3 -m pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.20" \
    && python3 -c "import tensorrt, onnxruntime; print('tensorrt', tensorrt.__version__, onnxruntime.get_available_providers())"
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin deploykit \
    && mkdir -p /models && chown deploykit /models
USER deploykit
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["deploykit", "serve", "/models", "--host", "0.0.0.0", "--port", "8000"]
CMD []

# ------------------------------------------------------------------------------------ cpu build
FROM python:${PYTHON_VERSION}-slim AS cpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/deploykit
COPY pyproject.toml constraints.txt README.md ./
COPY deploykit ./deploykit
# PyTorch's CPU wheel index: the default PyPI torch wheel for Linux carries CUDA (gigabytes) a CPU image never uses.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt ".[serve]"

# ------------------------------------------------------------------------------------------ cpu
FROM python:${PYTHON_VERSION}-slim AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
COPY --from=cpu-build /opt/venv /opt/venv
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin deploykit \
    && mkdir -p /models && chown deploykit /models
USER deploykit
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["deploykit", "serve", "/models", "--host", "0.0.0.0", "--port", "8000"]
CMD []
