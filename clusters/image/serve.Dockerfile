# The image of the head, the cpu_front nodes and the l4_llm nodes (clusters/gcp-l4/cluster.yaml,
# clusters/kuberay/rayservice.yaml): Ray 2.60 on Python 3.11, and the project with its `llm` extra
# (Ray's vLLM server; the ingress imports vLLM's request model when llm.backend is vllm), installed
# from locks/serve.txt with every hash checked. CUDA's user-space libraries come from the lock's
# wheels (torch 2.13: CUDA 13.0); a GPU node brings only the driver, R580 or later (docs/gpu.md,
# "Versions", which tests/test_images.py checks against the locks and the node images).
#   docker build -f clusters/image/serve.Dockerfile -t us-docker.pkg.dev/YOUR_PROJECT/avatar/talking-avatar-serve:0.1.0 .
# Not built in this repository's CI (no Docker engine there); the lock is resolved there.
FROM rayproject/ray:2.60.0-py311

USER root
# A C/C++ toolchain: llama-cpp-python (a base dependency, the embedded LLM) is source only on PyPI.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ffmpeg libsndfile1 \
 && rm -rf /var/lib/apt/lists/*

USER ray
WORKDIR /home/ray/talking-avatar
# The GPU of an l4_llm node: the NVIDIA container runtime mounts the driver's libraries only when
# compute is asked for; GKE mounts its driver under /usr/local/nvidia.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64
COPY --chown=ray:users locks/serve.txt locks/serve.txt
RUN pip install --no-cache-dir --require-hashes -r locks/serve.txt
COPY --chown=ray:users . .
RUN pip install --no-cache-dir --no-deps . && pip check
# The end-of-turn model the ingress loads (serve_app/turn_model.py), into ~/.cache/talking-avatar/.
RUN scripts/fetch_smart_turn.sh python
