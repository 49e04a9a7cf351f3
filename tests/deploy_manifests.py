"""What tests/unit/test_deploy.py reads of deploy/: the manifests, Dockerfiles and compose file,
and what each container sees of adcast's settings (the code's, never hard-coded)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from adcast.cli import build_parser
from adcast.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
DOCKERFILES = sorted(p for p in DEPLOY.glob("Dockerfile.*") if p.suffix != ".dockerignore")
# Files whose ADCAST_* names must be real (the local/ scripts have a variable of their own, ADCAST_BIN).
ENV_CHECKED = [*YAML_FILES, *DOCKERFILES, DEPLOY / "README.md", ROOT / "docs" / "feature-store.md"]
ENV_NAME = re.compile(r"\bADCAST_[A-Z0-9_]*[A-Z0-9]\b")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _compose() -> dict[str, Any]:
    return _docs(DEPLOY / "compose.yaml")[0]


def _k8s() -> list[dict[str, Any]]:
    return [d for p in sorted(K8S.glob("*.yaml")) for d in _docs(p)]


def _kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _k8s() if d.get("kind") == kind]


def _subcommands() -> set[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return set(actions[0].choices)


def _settings_fields(model: type[BaseModel] = Settings, prefix: str = "") -> dict[str, Any]:
    """Environment name -> annotation of every setting, nested groups joined as to_env joins them."""
    config = Settings.model_config
    prefix = prefix or config["env_prefix"].upper()
    fields: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        env = prefix + name.upper()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            fields |= _settings_fields(field.annotation, env + config["env_nested_delimiter"])
        else:
            fields[env] = field.annotation
    return fields


def _valid_env_names() -> set[str]:
    names = set(_settings_fields())
    # Variables the code reads directly rather than through Settings (config file, schemas, log level).
    direct = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["'](ADCAST_[A-Z0-9_]+)["']""")
    for path in [*(ROOT / "src" / "adcast").rglob("*.py"), *(ROOT / "stream").rglob("*.py")]:
        names |= set(direct.findall(path.read_text()))
    return names


def _dockerfile(path: Path) -> tuple[dict[str, str], list[str], list[str]]:
    """ENV, ENTRYPOINT and CMD of the last stage."""
    text = re.sub(r"\\\n", " ", path.read_text())
    last_stage = re.split(r"^FROM\s", text, flags=re.MULTILINE)[-1]
    env: dict[str, str] = {}
    entrypoint: list[str] = []
    cmd: list[str] = []
    for line in last_stage.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "ENV":
            for token in shlex.split(rest):
                name, _, value = token.partition("=")
                env[name] = value
        elif instruction == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif instruction == "CMD":
            cmd = json.loads(rest)
    return env, entrypoint, cmd


def _image_dockerfile(image: str) -> Path:
    """adcast-<tier>[:tag] is built from deploy/Dockerfile.<tier>."""
    path = DEPLOY / f"Dockerfile.{image.split(':')[0].removeprefix('adcast-')}"
    assert path.is_file(), f"image {image} has no Dockerfile in deploy/"
    return path


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """What a k8s container sees: image ENV, then envFrom ConfigMaps, then its env values."""
    env = dict(_dockerfile(_image_dockerfile(container["image"]))[0])
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in _kind("ConfigMap")}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:  # secrets are not in the repository
            env.update({k: str(v) for k, v in maps[source["configMapRef"]["name"]].items()})
    env.update({e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e})
    return env


def _service_dockerfile(service: dict[str, Any]) -> Path:
    """Compose resolves the context from the compose file's folder, the Dockerfile from the context."""
    return (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve()


def _service_env(service: dict[str, Any]) -> dict[str, str]:
    """What a compose service sees: its Dockerfile's ENV, then its environment."""
    env = dict(_dockerfile(_service_dockerfile(service))[0]) if "build" in service else {}
    env.update({k: str(v) for k, v in service.get("environment", {}).items()})
    return env


def _adcast_containers() -> list[dict[str, Any]]:
    return [
        c
        for d in _k8s()
        if d["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}
        for c in d["spec"]["template"]["spec"]["containers"]
        if c["image"].startswith("adcast-")
    ]


def _created_topics(script: str) -> dict[str, tuple[int, dict[str, str]]]:
    """`create NAME PARTITIONS [--config K=V ...]` lines of a topic-creation script."""
    return {
        name: (int(partitions), dict(re.findall(r"--config\s+([\w.]+)=(\S+)", rest)))
        for name, partitions, rest in re.findall(r"^\s*create\s+(\S+)\s+(\d+)(.*)$", script, flags=re.MULTILINE)
    }


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in _k8s()
        if d["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}
    ]


def _loaded_as_given(settings: Settings, env: dict[str, str]) -> None:
    """Every ADCAST_* setting of `env` is the value the loaded settings hold."""
    fields = _settings_fields()
    for name, value in env.items():
        if name not in fields:  # not a setting: PATH, or a variable the code reads itself
            continue
        held: Any = settings
        for part in name.removeprefix("ADCAST_").lower().split("__"):
            held = getattr(held, part)
        assert str(held).lower() == value.lower(), f"{name}={value!r} loaded as {held!r}"
