# syntax=docker/dockerfile:1
# sttm-serve images. Targets:
#   cpu    (default): python slim + ONNX Runtime CPU + PyAV + FastAPI. No torch, no CUDA.
#   gpu    : NVIDIA TensorRT runtime + onnxruntime-gpu (TensorRT / CUDA execution providers).
#   export : gpu + torch, for `sttm export` (checkpoint -> ONNX / TensorRT engine / Triton repo).
#
#   docker build --target cpu -t sttm-serve:cpu .
#   docker run -p 8000:8000 sttm-serve:cpu                       # the bundled demo model
#   docker run -p 8000:8000 -v $PWD/exported:/models:ro -e STTM_MODEL=/models/model.onnx sttm-serve:cpu
#
# The install steps are the ones CI runs (`make install` installs the same extras from the
# same pyproject.toml; tests/docker/test_images.py checks it and runs this pip command).

ARG PYTHON_IMAGE=python:3.11-slim
# CUDA 12.9 / TensorRT 10.11 / Python 3.12: what the onnxruntime-gpu wheels on PyPI are built for.
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:25.06-py3
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.06-py3

# ---- build: a virtual environment with the package and its serving dependencies ----
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY media ./media
COPY models ./models
COPY export ./export
COPY runtime ./runtime
COPY service ./service
COPY tritonserve ./tritonserve
COPY cli ./cli
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[serve,cpu]"

# ---- cpu: the default image ----
FROM ${PYTHON_IMAGE} AS cpu
LABEL org.opencontainers.image.title="sttm-serve" \
      org.opencontainers.image.description="Video action recognition with token merging, served over HTTP (CPU)"
RUN useradd --system --uid 10001 --home-dir /home/sttm --create-home sttm \
    && mkdir -p /models /cache \
    && chown sttm /models /cache
COPY --from=build /opt/venv /opt/venv
COPY docker/entrypoint.sh docker/healthcheck.py /usr/local/bin/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    STTM_HOST=0.0.0.0 \
    STTM_PORT=8000 \
    STTM_MODEL=demo
USER 10001
WORKDIR /home/sttm
VOLUME ["/cache"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["python", "/usr/local/bin/healthcheck.py"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["sttm", "serve"]

# ---- gpu: TensorRT / CUDA execution providers; engines cached on the /cache volume ----
FROM ${TENSORRT_IMAGE} AS gpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY media ./media
COPY models ./models
COPY export ./export
COPY runtime ./runtime
COPY service ./service
COPY tritonserve ./tritonserve
COPY cli ./cli
# --system-site-packages: the base image's TensorRT Python bindings satisfy the `gpu` extra.
RUN python3 -m venv --system-site-packages /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[serve,gpu]" \
    && useradd --system --uid 10001 --home-dir /home/sttm --create-home sttm \
    && mkdir -p /models /cache \
    && chown sttm /models /cache
COPY docker/entrypoint.sh docker/healthcheck.py /usr/local/bin/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    STTM_HOST=0.0.0.0 \
    STTM_PORT=8000 \
    STTM_MODEL=demo \
    STTM_ENGINE_CACHE=/cache \
    STTM_PROVIDERS='["TensorrtExecutionProvider","CUDAExecutionProvider","CPUExecutionProvider"]'
USER 10001
WORKDIR /home/sttm
VOLUME ["/cache"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 CMD ["python", "/usr/local/bin/healthcheck.py"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["sttm", "serve"]

# ---- export: checkpoint -> ONNX / TensorRT engine / Triton repository, on the target GPU ----
FROM gpu AS export
USER root
RUN /opt/venv/bin/pip install --no-cache-dir "/src[export]"
USER 10001
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["sttm", "export", "--help"]

# ---- triton: Triton Inference Server serving a repository from `sttm export --format triton` ----
# Its Python-backend models (sttm_preprocess, sttm_postprocess, and the model itself with
# --triton-runtime python) import this package: installed in /opt/sttm, which the repository's
# model.py files put on sys.path from PYTHONPATH (Triton's embedded interpreter ignores it
# otherwise). numpy < 2: what Triton's Python-backend stub reads tensors with.
FROM ${TRITON_IMAGE} AS triton
WORKDIR /src
COPY pyproject.toml README.md ./
COPY media ./media
COPY models ./models
COPY export ./export
COPY runtime ./runtime
COPY service ./service
COPY tritonserve ./tritonserve
COPY cli ./cli
RUN python3 -m pip install --no-cache-dir --target /opt/sttm ".[serve,cpu]" "numpy<2"
ENV PYTHONPATH=/opt/sttm \
    PYTHONUNBUFFERED=1
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/v2/health/ready"]
CMD ["tritonserver", "--model-repository=/models/triton", "--strict-readiness=true"]
