#
# deploykit serving images: `deploykit serve /models` over the KServe v2 HTTP protocol on port 8000.
# The CPU image holds no PyTorch: serving needs ONNX Runtime, not the export tools (the GPU image has torch for
# TensorRT's device buffers, through the trt extra).
#
#   docker build --target cpu -t deploykit:cpu .      # Debian's Python, ONNX Runtime on the CPU
#   docker build --target gpu -t deploykit:gpu .      # NVIDIA's TensorRT image: TensorRT plans + ONNX Runtime GPU
#   podman build --format docker --target cpu -t deploykit:cpu .   # podman/buildah: docker format keeps HEALTHCHECK
#
#   docker run --rm -p 8000:8000 -v "$PWD/models:/models:ro" deploykit:cpu
#   docker run --rm --gpus all -p 8000:8000 -v "$PWD/models:/models:ro" deploykit:gpu
#
# Flags after the image name go to `deploykit serve`, e.g. `deploykit:cpu --port 18000 --batching on`; the
# HEALTHCHECK finds the port the server listens on, whatever it is.
# Base images are build arguments (a mirror, or a local image where no registry is reachable:
# scripts/container_check.sh bootstraps one with debootstrap). The CPU base needs python3 with venv.
# A TensorRT plan loads only with the TensorRT version (and GPU model) that built it: pick GPU_BASE_IMAGE so
# that the image's TensorRT is the one `deploykit build` used (NVIDIA's container release notes list it).

ARG CPU_BASE_IMAGE=python:3.11-slim
ARG GPU_BASE_IMAGE=nvcr.io/nvidia/tensorrt:25.10-py3

# ------------------------------------------------------------------------------------------ gpu
FROM ${GPU_BASE_IMAGE} AS gpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1
WORKDIR /opt/deploykit
COPY pyproject.toml constraints.txt README.md ./
COPY deploykit ./deploykit
# The image's own TensorRT Python package satisfies the trt extra; its torch (engine buffers) is PyPI's CUDA
# build. onnxruntime (a core dependency) and onnxruntime-gpu install the same `onnxruntime` package, so the CPU
# build is removed and the GPU one put back.
RUN python3 -m pip install -c constraints.txt ".[trt,gpu,serve]" \
    && python3 -m pip uninstall -y onnxruntime \
    && python3 -m pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.20" \
    && python3 -c "import tensorrt, onnxruntime; print('tensorrt', tensorrt.__version__, onnxruntime.get_available_providers())"
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin deploykit \
    && mkdir -p /models && chown deploykit /models
USER deploykit
EXPOSE 8000 8001
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 CMD ["python3", "-m", "deploykit.healthcheck"]
ENTRYPOINT ["deploykit", "serve", "/models", "--host", "0.0.0.0", "--port", "8000"]
CMD []

# ------------------------------------------------------------------------------------ cpu build
FROM ${CPU_BASE_IMAGE} AS cpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/deploykit
COPY pyproject.toml constraints.txt README.md ./
COPY deploykit ./deploykit
# The base install and the serve extra: ONNX Runtime, no torch. pip and setuptools leave the venv afterwards
# (the running server never installs anything).
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/python3 -m pip install -c constraints.txt ".[serve]" \
    && /opt/venv/bin/python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    && /opt/venv/bin/python3 -m pip uninstall -y pip setuptools

# ------------------------------------------------------------------------------------------ cpu
FROM ${CPU_BASE_IMAGE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
COPY --from=cpu-build /opt/venv /opt/venv
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin deploykit \
    && mkdir -p /models && chown deploykit /models
USER deploykit
EXPOSE 8000 8001
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["python3", "-m", "deploykit.healthcheck"]
ENTRYPOINT ["deploykit", "serve", "/models", "--host", "0.0.0.0", "--port", "8000"]
CMD []
