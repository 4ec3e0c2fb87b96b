# The image of the l4_media nodes (ASR, TTS, Ditto; clusters/gcp-l4/cluster.yaml,
# clusters/kuberay/rayservice.yaml): Ray 2.60 on Python 3.11, the project with its `gpu` and `ditto`
# extras from locks/media.txt (every hash checked): torch 2.10 on CUDA 12.8 with cuDNN 9.10 and cuBLAS
# 12.8 as wheels, so a node needs only a driver of R570 or later (docs/gpu.md, "Versions"; checked by
# tests/test_images.py); TensorRT 10.9, whose libraries are not on PyPI as wheels (tensorrt-cu12 and
# tensorrt-cu12-libs there are source archives that download from NVIDIA's index, which this build
# uses directly);
# Ditto's code at a pinned commit, and its grid_sample_3d TensorRT plugin, compiled for the L4 (sm_89)
# in NVIDIA's TensorRT container of the same TensorRT version.
#   docker build -f clusters/image/media.Dockerfile -t us-docker.pkg.dev/YOUR_PROJECT/avatar/talking-avatar-media:0.1.0 .
# Not built in this repository's CI (no Docker engine there); the lock is resolved there.
ARG TRT_VERSION=10.9.0.34

# --- the grid_sample_3d plugin (Ditto's warp network), built against TensorRT's headers and nvcc ---
# NVIDIA's TensorRT container 25.03 carries TensorRT 10.9.0.34 and CUDA 12.8; the build stops if not.
FROM nvcr.io/nvidia/tensorrt:25.03-py3 AS plugin
ARG TRT_VERSION
ARG PLUGIN_COMMIT=8ee3c0596b5a0b87153b324cb5763ef3a01a8be9
RUN test "$(python3 -c 'import tensorrt; print(tensorrt.__version__)')" = "$TRT_VERSION" \
 || { echo "this TensorRT container does not carry TensorRT $TRT_VERSION" >&2; exit 1; }
RUN git clone https://github.com/SeanWangJS/grid-sample3d-trt-plugin /src \
 && git -C /src checkout --detach "$PLUGIN_COMMIT" \
 && cmake -S /src -B /src/build -DCMAKE_CUDA_ARCHITECTURES=89 \
      -DTensorRT_INCLUDE_DIR=/usr/include/x86_64-linux-gnu -DTensorRT_LIB_DIR=/usr/lib/x86_64-linux-gnu \
 && cmake --build /src/build --target grid_sample_3d_plugin -j "$(nproc)"

# --- the node image ---
FROM rayproject/ray:2.60.0-py311
ARG TRT_VERSION

USER root
# build-essential: llama-cpp-python (source only on PyPI) and Ditto's Cython blend extension, which
# is compiled on first import; ffmpeg: torchcodec loads the system's FFmpeg libraries (XTTS).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git build-essential ffmpeg libsndfile1 \
 && rm -rf /var/lib/apt/lists/*

# antgroup/ditto-talkinghead, "release pytorch model" (2025-07-11); the backend imports it from here.
ARG DITTO_COMMIT=e9191cf6cf8cb41d296239889662c27bc592c9ee
RUN git clone https://github.com/antgroup/ditto-talkinghead /opt/ditto-talkinghead \
 && git -C /opt/ditto-talkinghead checkout --detach "$DITTO_COMMIT" \
 && mkdir -p /opt/ditto-talkinghead/plugins \
 && chown -R ray:users /opt/ditto-talkinghead
COPY --from=plugin --chown=ray:users /src/build/libgrid_sample_3d_plugin.so /opt/ditto-talkinghead/plugins/

USER ray
WORKDIR /home/ray/talking-avatar
# The GPU: the NVIDIA container runtime mounts the driver's libraries only when compute is asked for;
# GKE mounts its driver under /usr/local/nvidia. ctranslate2 (faster-whisper) loads libcublas.so.12 by
# name, so the lock's cuBLAS and cuDNN wheels go on the library path (faster-whisper's README).
ARG SITE=/home/ray/anaconda3/lib/python3.11/site-packages
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64:${SITE}/nvidia/cublas/lib:${SITE}/nvidia/cudnn/lib
COPY --chown=ray:users locks/media.txt locks/media.txt
# TensorRT's `tensorrt` package and its libraries come from NVIDIA's index (on PyPI both are source
# archives that fetch from there); its bindings, the same version, are in the lock.
RUN pip install --no-cache-dir --require-hashes -r locks/media.txt \
 && pip install --no-cache-dir --extra-index-url https://pypi.nvidia.com \
      "tensorrt-cu12==$TRT_VERSION" "tensorrt-cu12-libs==$TRT_VERSION" "tensorrt-cu12-bindings==$TRT_VERSION" \
 && for d in tensorrt-cu12 tensorrt-cu12-libs tensorrt-cu12-bindings; do \
      test "$(pip show "$d" | sed -n 's/^Version: //p')" = "$TRT_VERSION" || exit 1; done \
 && test -d "$SITE/nvidia/cublas/lib" && test -d "$SITE/nvidia/cudnn/lib"
COPY --chown=ray:users . .
RUN pip install --no-cache-dir --no-deps . && pip check
