"""cluster.yaml: valid for Ray's cluster launcher, and shaped the way the project relies on.

Validation uses Ray's own code path from ``ray up``: ``prepare_config`` (merge with the AWS
defaults, per-node-type min/max) then ``validate_config`` (the ``ray-schema.json`` shipped
in the ray package, via jsonschema, plus Ray's cross-field checks). The raw file is also
checked against the schema directly, so a typo cannot hide behind the defaults merge.
No AWS access is needed: nothing here talks to the provider.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
SCHEMA_PATH = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    assert SCHEMA_PATH.is_file(), f"Ray's cluster schema not found at {SCHEMA_PATH}"
    return json.loads(SCHEMA_PATH.read_text())


def _ray_validate(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does before talking to the cloud: fill defaults, then validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _commands(cmds: list[str]) -> str:
    return "\n".join(cmds)


def test_valid_for_rays_schema_and_validator(config: dict, schema: dict) -> None:
    jsonschema.validate(config, schema)  # the file as written
    _ray_validate(config)  # as `ray up` sees it


def test_misspelled_top_level_key_is_rejected(config: dict, schema: dict) -> None:
    broken = copy.deepcopy(config)
    broken["idle_timeout_minuts"] = broken.pop("idle_timeout_minutes")
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minuts"):
        jsonschema.validate(broken, schema)
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minuts"):
        _ray_validate(broken)


def test_misspelled_node_type_key_is_rejected(config: dict) -> None:
    broken = copy.deepcopy(config)
    gpu = broken["available_node_types"]["gpu_worker"]
    gpu["max_worker"] = gpu.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _ray_validate(broken)


def test_aws_provider_and_ssh(config: dict) -> None:
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["region"] == "us-west-2"
    assert config["provider"]["cache_stopped_nodes"] is False
    assert config["auth"]["ssh_user"] == "ubuntu"
    assert config["idle_timeout_minutes"] > 0


def test_node_types(config: dict) -> None:
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}

    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu, "need a GPU worker type with resources: {GPU: n}"
    assert all(t.get("min_workers", 0) == 0 and t["max_workers"] >= 1 for t in gpu)

    cpu = [t for t in workers.values() if t["resources"].get("GPU", 0) == 0]
    assert cpu, "need a CPU worker type for video decoding"
    assert all(t["max_workers"] > t.get("min_workers", 0) for t in cpu)  # autoscaling

    total = sum(t.get("max_workers", 0) for t in types.values())
    assert config["max_workers"] >= total, (config["max_workers"], total)


def test_head_starts_ray_with_token_auth_and_mlflow(config: dict) -> None:
    cmds = _commands(config["head_start_ray_commands"])
    assert re.search(r"RAY_AUTH_MODE=token ray start --head", cmds)
    mlflow = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c)
    assert "--port 5000" in mlflow and "--host 0.0.0.0" in mlflow
    assert "--backend-store-uri sqlite:////mnt/shared/mlflow/mlflow.db" in mlflow
    assert "--default-artifact-root /mnt/shared/mlflow/artifacts" in mlflow
    assert "nohup" in mlflow and mlflow.rstrip().endswith("&")  # does not block `ray up`


def test_workers_use_token_auth_too(config: dict) -> None:
    cmds = _commands(config["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token ray start --address=$RAY_HEAD_IP:6379" in cmds
    assert "export RAY_AUTH_MODE=token" in _commands(config["setup_commands"])
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_setup_installs_project_and_mounts_shared_storage(config: dict) -> None:
    assert config["file_mounts"]["~/livephoto"] == "."
    setup = _commands(config["setup_commands"])
    assert "cd ~/livephoto && pip install -e ." in setup
    assert "--python 3.11" in setup  # pyproject pins python 3.11
    assert "mount -t nfs4" in setup and " /mnt/shared" in setup
    assert "fs-REPLACE_ME" in setup  # the placeholder the user must replace
    for sub in ("data", "checkpoints", "mlflow/artifacts"):
        assert f"/mnt/shared/{sub}" in setup
    assert "boto3" in _commands(config["head_setup_commands"])
    assert ".gitignore" in config["rsync_filter"]  # keeps .venv/ and data out of the sync


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_commands_are_valid_bash(config: dict) -> None:
    keys = [k for k in config if k.endswith("_commands")]
    for key in keys:
        for cmd in config[key]:
            proc = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
            assert proc.returncode == 0, f"{key}: {cmd!r}: {proc.stderr}"


def test_efs_placeholder_fails_loudly() -> None:
    """The unreplaced placeholder stops setup with a clear message (before any sudo)."""
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    cmd = next(c for c in config["setup_commands"] if "EFS_ID=" in c)
    guard = cmd[: cmd.index("esac;") + len("esac;")]  # `EFS_ID=...; case ... esac;`
    proc = subprocess.run(["bash", "-c", guard], capture_output=True, text=True)
    assert proc.returncode == 1 and "EFS file system id" in proc.stderr
    ok = subprocess.run(
        ["bash", "-c", guard.replace("fs-REPLACE_ME", "fs-0123456789abcdef0")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
