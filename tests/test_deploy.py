"""The launch files in deploy/: what a cluster launcher and KubeRay will read, checked for the
fields they need (the cluster launcher's file against Ray's own schema)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def _image() -> str:
    """The tag deploy/Dockerfile says to build."""
    match = re.search(r"docker build .* -t (\S+) \.", (DEPLOY / "Dockerfile").read_text())
    assert match, "deploy/Dockerfile says how to build its image"
    return match.group(1)


def test_the_image_installs_the_wheel_with_its_cluster_extras() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    ray_pin = re.search(r"^ray==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert ray_pin and f"FROM rayproject/ray:{ray_pin.group(1)}-py311" in text
    assert "[ray,postgres]" in text and "-c /tmp/constraints.txt" in text


def test_the_cluster_launcher_file_is_valid_for_ray_and_runs_the_image() -> None:
    import jsonschema
    import ray.autoscaler

    config = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # Ray's own schema for `ray up`
    assert config["docker"]["image"] == _image()
    assert config["head_node_type"] in config["available_node_types"]
    assert config["file_mounts"] == {}  # nothing shared: trials' files travel through Ray
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert any("ray start --address" in c for c in config["worker_start_ray_commands"])


def test_the_rayjob_runs_a_search_on_its_cluster_of_the_image() -> None:
    job = yaml.safe_load((DEPLOY / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    words = shlex.split(spec["entrypoint"])
    assert words[:4] == ["python", "-m", "automl", "search"]
    flags = dict(zip(words[4::2], words[5::2], strict=False))
    assert flags["--executor"] == "ray" and flags["--ray-address"] == "auto"
    assert flags["--workers"] == "auto" and flags["--storage"].startswith("postgresql://")
    assert "***@" in flags["--storage"]  # the password comes from a secret, not the manifest
    cluster = spec["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    for pod in pods:
        (container,) = pod["template"]["spec"]["containers"]
        assert container["image"] == _image()
        assert container["resources"]["limits"]["cpu"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in head["env"]}
    assert secret["AUTOML_STORAGE_PASSWORD"]["key"] == "password"
    mounts = {m["mountPath"] for m in head["volumeMounts"]}
    assert flags["--out"].startswith(tuple(mounts))  # the run directory is on the head's volume
    assert "volumeMounts" not in pods[1]["template"]["spec"]["containers"][0]  # workers: no disk
