"""The node images agree with their locks and with the machines that run them: docs/gpu.md's one table
of versions ("Versions") is read and checked against locks/*.txt (what each image installs), the
Dockerfiles in clusters/image/, the node images and Docker images of clusters/gcp-l4/cluster.yaml and
the images of clusters/kuberay/rayservice.yaml. No Docker engine and no GPU here: these are the
facts a first `ray up` would otherwise find out one failure at a time."""

import re
from pathlib import Path

import pytest
import yaml

from tests.cluster_rehearsal import CLUSTER_YAML, RAYSERVICE, ROOT, load

DOC = ROOT / "docs" / "gpu.md"
IMAGES = ROOT / "clusters" / "image"

# The oldest Linux driver each CUDA release needs without the compatibility package (NVIDIA's CUDA
# Toolkit release notes, table 3, "CUDA Toolkit and Corresponding Driver Versions": CUDA 12.8 GA
# >= 570.26, CUDA 13.0 GA >= 580.65.06).
MIN_DRIVER = {"12.8": "570.26", "13.0": "580.65.06"}


def version_table() -> dict[str, dict[str, str]]:
    """docs/gpu.md's table under "## Versions": image name -> column -> cell (backticks dropped)."""
    text = DOC.read_text()
    section = text.split("\n## Versions\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table = {}
    for line in rows[2:]:
        cells = [c.strip().replace("`", "") for c in line.strip("|").split("|")]
        row = dict(zip(header, cells))
        table[row["image"]] = row
    return table


def pins(lock: Path) -> dict[str, str]:
    return dict(re.findall(r"(?m)^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text()))


def major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def dockerfile_stage(path: Path) -> str:
    """The last stage of a Dockerfile (the image itself, after any builder stage)."""
    return re.split(r"(?m)^FROM ", path.read_text())[-1]


TABLE = version_table()


def test_the_table_has_one_row_per_image_and_each_has_its_dockerfile_and_lock():
    assert set(TABLE) == {"talking-avatar-serve", "talking-avatar-media"}
    assert {p.name for p in IMAGES.iterdir()} == {f"{r['image'].removeprefix('talking-avatar-')}.Dockerfile" for r in TABLE.values()}
    for name, row in TABLE.items():
        role = name.removeprefix("talking-avatar-")
        assert row["lock"] == f"locks/{role}.txt" and (ROOT / row["lock"]).is_file(), name
        stage = dockerfile_stage(IMAGES / f"{role}.Dockerfile")
        assert stage.startswith(f"rayproject/ray:{pins(ROOT / row['lock'])['ray']}-py311\n"), name
        assert f"--require-hashes -r {row['lock']}" in stage and "pip install --no-cache-dir --no-deps ." in stage


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_images_cuda_libraries_are_the_ones_its_lock_installs(name):
    row = TABLE[name]
    locked = pins(ROOT / row["lock"])
    assert locked["torch"] == row["torch"]
    cu = "-cu12" if row["CUDA"].startswith("12.") else ""  # CUDA 13's wheels dropped the suffix
    assert major_minor(locked[f"nvidia-cuda-runtime{cu}"]) == row["CUDA"]
    assert major_minor(locked[f"nvidia-cublas{cu}"]) == row["cuBLAS"]
    cudnn = next(v for k, v in locked.items() if k.startswith("nvidia-cudnn-cu"))
    assert major_minor(cudnn) == row["cuDNN"]
    assert locked["cuda-bindings"].split(".")[0] == row["cuda-bindings"]
    assert locked.get("tensorrt-cu12-bindings", "—") == row["TensorRT"]
    assert row["driver needed"] == MIN_DRIVER[row["CUDA"]]


def test_the_media_image_holds_what_ditto_and_faster_whisper_load_at_run_time():
    """Ditto's TensorRT utilities import `from cuda import cuda, cudart`, which cuda-bindings 13
    removed (its wheel has no cuda/cudart module; 12.9's has); ctranslate2 4.x dlopens
    libcublas.so.12, which only a CUDA 12 cuBLAS wheel has; the TensorRT libraries come from NVIDIA's
    index at the lock's bindings version; and both CUDA libraries are on the library path."""
    locked = pins(ROOT / "locks" / "media.txt")
    assert locked["cuda-python"].startswith("12.") and locked["cuda-bindings"].startswith("12.")
    assert locked["ctranslate2"].startswith("4.") and locked["nvidia-cublas-cu12"].startswith("12.")
    for module in ("filetype", "imageio", "imageio-ffmpeg", "scikit-image", "cython", "polygraphy", "colored", "librosa"):
        assert module in locked, module
    dockerfile = (IMAGES / "media.Dockerfile").read_text()
    assert re.search(r"(?m)^ARG TRT_VERSION=(\S+)$", dockerfile)[1] == locked["tensorrt-cu12-bindings"]
    stage = dockerfile_stage(IMAGES / "media.Dockerfile")
    assert "nvidia/cublas/lib" in stage and "nvidia/cudnn/lib" in stage and "NVIDIA_DRIVER_CAPABILITIES=compute" in stage
    assert re.search(r"(?m)^ARG DITTO_COMMIT=e9191cf6cf8cb41d296239889662c27bc592c9ee$", dockerfile)


def test_the_serve_image_has_what_the_ingress_imports_for_vllm():
    """With llm.backend vllm the ingress builds `ray.serve.llm.openai_api_models.ChatCompletionRequest`,
    which imports vLLM's own request model (and pyarrow, through ray.llm): the front nodes need vLLM."""
    locked = pins(ROOT / "locks" / "serve.txt")
    assert {"vllm", "pyarrow", "ray"} <= set(locked) and locked["ray"] == "2.60.0"
    import importlib.util

    source = Path(importlib.util.find_spec("ray.llm._internal.serve.core.configs.openai_api_models").origin).read_text()
    assert "from vllm.entrypoints.openai" in source  # Ray 2.60's request model is vLLM's


def test_gce_node_types_run_the_image_of_their_role_on_a_driver_it_supports():
    cfg = load(CLUSTER_YAML)
    default = cfg["docker"]["image"]
    for name, node in cfg["available_node_types"].items():
        image = node.get("docker", {}).get("worker_image", default)
        image_name = image.rsplit("/", 1)[1].split(":")[0]
        role = "talking-avatar-media" if "avatar_media" in node["resources"] else "talking-avatar-serve"
        assert image_name == role, name
        family = node["node_config"]["disks"][0]["initializeParams"]["sourceImage"].rsplit("/", 1)[1]
        if node["resources"].get("GPU"):
            branch = re.search(r"-nvidia-(\d+)$", family)
            assert branch, f"{name}: {family} does not name its driver branch"
            needed = int(TABLE[role]["driver needed"].split(".")[0])
            assert int(branch[1]) >= needed, f"{name}: {family} < R{needed}"
            assert family in TABLE[role]["GCE node image"], name
            (floor,) = (int(m[1]) for c in node["initialization_commands"] if (m := re.search(r"-ge (\d+)", c)))
            assert floor >= needed, name  # the boot stops on an older driver
        else:
            assert family == "common-cpu" and family in TABLE[role]["GCE node image"], name


def test_gke_groups_run_the_image_of_their_role():
    cluster = load(RAYSERVICE)["spec"]["rayClusterConfig"]
    groups = {"headgroup": cluster["headGroupSpec"], **{g["groupName"]: g for g in cluster["workerGroupSpecs"]}}
    for name, group in groups.items():
        (container,) = group["template"]["spec"]["containers"]
        image_name = container["image"].rsplit("/", 1)[1].split(":")[0]
        media = "avatar_media" in group["rayStartParams"].get("resources", "")
        assert image_name == ("talking-avatar-media" if media else "talking-avatar-serve"), name
        assert image_name in TABLE, name


def test_docs_build_and_name_both_images():
    text = DOC.read_text()
    for name in TABLE:
        role = name.removeprefix("talking-avatar-")
        assert f"docker build -f clusters/image/{role}.Dockerfile -t us-docker.pkg.dev/$PROJECT/avatar/{name}:0.1.0 ." in text
    assert "clusters/image/Dockerfile" not in text
