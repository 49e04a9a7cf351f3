"""The deploy files agree with the code: structure, `adcast` subcommands, settings, topics.

Nothing here is hard-coded from the code: subcommands come from the CLI parser, valid `ADCAST_*`
names from the Settings models, topics from `adcast.kafka.topic_specs`, and each container's
effective settings from loading them the way the container does (image ENV, then its own env).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from deploy_manifests import (
    DEPLOY,
    DOCKERFILES,
    ENV_CHECKED,
    ENV_NAME,
    K8S,
    ROOT,
    YAML_FILES,
    _adcast_containers,
    _compose,
    _container_env,
    _created_topics,
    _dockerfile,
    _docs,
    _k8s,
    _kind,
    _loaded_as_given,
    _pod_specs,
    _service_dockerfile,
    _service_env,
    _settings_fields,
    _subcommands,
    _valid_env_names,
)

from adcast.config import ROCKSDB_WRITE_BUFFERS, Settings, load_settings, to_env
from adcast.kafka import topic_specs


@pytest.fixture
def settings_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Load Settings exactly as a container with this environment would."""

    def load(env: dict[str, str]) -> Settings:
        for name in list(os.environ):
            if name.startswith("ADCAST_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("ADCAST_CONFIG", str(tmp_path / "absent.toml"))
        for name, value in env.items():
            if name.startswith("ADCAST_"):  # the image's PATH and the like stay out of this process
                monkeypatch.setenv(name, value)
        return load_settings()

    return load


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert _docs(path)


def test_compose_services() -> None:
    services = _compose()["services"]
    assert {"kafka", "redis", "stream", "infer"} <= set(services)
    for name in ("stream", "infer"):
        assert _service_dockerfile(services[name]) == DEPLOY / f"Dockerfile.{name}"
        assert (DEPLOY / services[name]["build"]["context"] / "pyproject.toml").is_file()
    devices = services["infer"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)


def test_k8s_documents_are_named() -> None:
    docs = _k8s()
    assert docs
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), d


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = _kind("Kustomization")
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_stream_state_volume_is_the_configured_data_dir(settings_from: Any) -> None:
    (statefulset,) = _kind("StatefulSet")
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    data_dir = settings_from(_container_env(container)).stream.data_dir
    assert Path(data_dir).is_absolute()
    assert {m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims} == {data_dir}


def test_compose_stream_state_volume_is_the_configured_data_dir(settings_from: Any) -> None:
    service = _compose()["services"]["stream"]
    data_dir = settings_from(_service_env(service)).stream.data_dir
    assert any(v.split(":")[1] == data_dir for v in service["volumes"])


def _component(workload: dict[str, Any]) -> str:
    return workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def test_inference_requests_a_gpu() -> None:
    deployments = [d for d in _kind("Deployment") if _component(d) != "serve"]
    assert {_component(d) for d in deployments} == {"infer", "infer-shadow"}  # the live inference tier and its shadow
    for deployment in deployments:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1, deployment["metadata"]["name"]


def test_metrics_ports_are_annotated(settings_from: Any) -> None:
    workloads = [*_kind("StatefulSet"), *_kind("Deployment")]
    assert {w["kind"] for w in workloads} == {"StatefulSet", "Deployment"}
    for workload in workloads:
        template = workload["spec"]["template"]
        (container,) = template["spec"]["containers"]
        settings = settings_from(_container_env(container))
        # A worker serves them on the metrics port; `adcast serve` at /metrics of its own port.
        port = settings.serve.port if _component(workload) == "serve" else settings.metrics_port
        assert port, f"{workload['metadata']['name']} serves no metrics"
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert port in {p["containerPort"] for p in container["ports"]}


def test_secrets_stay_out_of_config_maps() -> None:
    # SecretStr settings, and the Redis URL, which carries the password in production.
    secret = {"ADCAST_REDIS__URL"} | {n for n, kind in _settings_fields().items() if "SecretStr" in str(kind)}
    for config_map in _kind("ConfigMap"):
        assert not secret & set(config_map.get("data", {})), config_map["metadata"]["name"]
    for deployment in _kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        refs = {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        assert "ADCAST_REDIS__URL" in refs, deployment["metadata"]["name"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_an_adcast_subcommand(path: Path) -> None:
    _, entrypoint, cmd = _dockerfile(path)
    assert entrypoint == ["adcast"]
    assert cmd and cmd[0] in _subcommands()
    assert cmd[0] == path.name.split(".")[1]  # each tier's image runs that tier


def test_compose_commands_are_adcast_subcommands() -> None:
    subcommands = _subcommands()
    for name, service in _compose()["services"].items():
        if "build" not in service:
            continue
        entrypoint = service.get("entrypoint", _dockerfile(_service_dockerfile(service))[1])
        assert entrypoint == ["adcast"], name
        assert service["command"][0] in subcommands, name


def test_k8s_commands_are_adcast_subcommands() -> None:
    subcommands = _subcommands()
    containers = _adcast_containers()
    assert {c["name"] for c in containers} >= {"stream", "infer"}
    for c in containers:
        argv = [*c.get("command", ["adcast"]), *c.get("args", [])]
        assert argv[0] == "adcast" and argv[1] in subcommands, c["name"]
        assert argv[1] == c["image"].removeprefix("adcast-"), c["name"]


def test_env_names_are_settings() -> None:
    valid = _valid_env_names()
    # The derivation names what to_env writes, so workers started either way agree.
    assert set(to_env(Settings())) <= valid
    for path in ENV_CHECKED:
        unknown = set(ENV_NAME.findall(path.read_text())) - valid
        assert not unknown, f"{path.relative_to(ROOT)}: not adcast settings: {sorted(unknown)}"


def test_env_values_load(settings_from: Any) -> None:
    for c in _adcast_containers():
        env = _container_env(c)
        _loaded_as_given(settings_from(env), env)
    for service in _compose()["services"].values():
        if "build" in service:
            env = _service_env(service)
            _loaded_as_given(settings_from(env), env)


def test_compose_topics_match_topic_specs(settings_from: Any) -> None:
    services = _compose()["services"]
    script = "\n".join(services["topics"]["command"])
    assert _created_topics(script) == topic_specs(settings_from(_service_env(services["stream"])))


def test_k8s_topics_match_topic_specs(settings_from: Any) -> None:
    (job,) = [j for j in _kind("Job") if j["metadata"]["name"] == "adcast-topics"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    (statefulset,) = _kind("StatefulSet")
    (stream,) = statefulset["spec"]["template"]["spec"]["containers"]
    settings = settings_from(_container_env(stream))
    expected = topic_specs(settings)
    assert _created_topics("\n".join(container["args"])) == expected
    # A worker beyond its input topic's partitions would sit idle.
    assert statefulset["spec"]["replicas"] <= expected[settings.topics.name("events")][0]
    for deployment in _kind("Deployment"):
        assert deployment["spec"]["replicas"] <= expected[settings.topics.name("requests")][0]


def test_every_container_runs_unprivileged_on_a_read_only_root() -> None:
    for name, pod in _pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        volumes = {v["name"] for v in pod.get("volumes", [])} | {
            c["metadata"]["name"] for d in _k8s() if d["metadata"]["name"] == name
            for c in d["spec"].get("volumeClaimTemplates", [])
        }  # fmt: skip
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{c['name']}: nowhere to write scratch files"
            assert set(mounts.values()) <= volumes, c["name"]


def test_every_pod_reaches_a_secured_kafka_with_the_same_settings() -> None:
    for name, pod in _pod_specs():
        for c in pod["containers"]:
            refs = [s["secretRef"] for s in c.get("envFrom", []) if "secretRef" in s]
            assert {"name": "adcast-kafka", "optional": True} in refs, f"{name}/{c['name']}"
    (job,) = [j for j in _kind("Job") if j["metadata"]["name"] == "adcast-topics"]
    script = "\n".join(job["spec"]["template"]["spec"]["containers"][0]["args"])
    for setting in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD", "SSL_CAFILE"):
        assert f"ADCAST_KAFKA__{setting}" in script
    assert '--command-config "$client"' in script


def test_topics_keep_acked_writes_through_the_loss_of_a_broker() -> None:
    (job,) = [j for j in _kind("Job") if j["metadata"]["name"] == "adcast-topics"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: int(e["value"]) for e in container["env"] if e["name"].endswith(("FACTOR", "REPLICAS"))}
    assert 2 <= env["MIN_INSYNC_REPLICAS"] < env["REPLICATION_FACTOR"]
    assert '--config min.insync.replicas="$MIN_INSYNC_REPLICAS"' in "\n".join(container["args"])


def test_ingress_is_closed_but_for_metrics_the_history_page_and_serve() -> None:
    policies = _kind("NetworkPolicy")
    adcast = {"app.kubernetes.io/name": "adcast"}
    stream = adcast | {"app.kubernetes.io/component": "stream"}
    serve = adcast | {"app.kubernetes.io/component": "serve"}
    assert any(p["spec"]["podSelector"]["matchLabels"] == adcast and "ingress" not in p["spec"] for p in policies)
    opened = [(p["spec"]["podSelector"]["matchLabels"], r) for p in policies for r in p["spec"].get("ingress", [])]
    assert sorted(port["port"] for _, r in opened for port in r["ports"]) == ["history", "http", "metrics"]
    by_port = {rule["ports"][0]["port"]: (pods, rule["from"]) for pods, rule in opened}
    # Only the stream pods serve the history page, to `adcast serve` and to each other (Faust forwards).
    assert by_port["history"] == (
        stream,
        [{"podSelector": {"matchLabels": serve}}, {"podSelector": {"matchLabels": stream}}],
    )
    # Metrics: to Prometheus's namespace, and to the inspector's fleet view.
    assert by_port["metrics"][1][1] == {"podSelector": {"matchLabels": serve}}
    # The lookups and the inspector: only serve pods, to their labelled clients and Prometheus.
    assert by_port["http"][0] == serve
    for source in by_port["http"][1]:
        (labels,) = [s["matchLabels"] for s in source.values()]
        assert labels in ({"adcast.io/serve-client": "true"}, {"adcast.io/scrapes-metrics": "true"}), source
    ports = {"stream": {"metrics", "history"}, "serve": {"http"}}
    for name, pod in _pod_specs():
        for c in pod["containers"]:
            assert {p["name"] for p in c.get("ports", [])} <= ports.get(c["name"], {"metrics"}), f"{name}/{c['name']}"


def test_the_history_page_is_served_on_its_port(settings_from: Any) -> None:
    (statefulset,) = _kind("StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    settings = settings_from(_container_env(container))
    port = settings.stream.web_port
    assert port and port != settings.metrics_port
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["history"] == port
    (service,) = [s for s in _kind("Service") if s["metadata"]["name"] == statefulset["spec"]["serviceName"]]
    assert {"name": "history", "port": port, "targetPort": "history"} in service["spec"]["ports"]
    # Workers forward requests to each other's canonical URL: each names itself by its own address.
    (host,) = [e for e in container["env"] if e["name"] == "ADCAST_STREAM__WEB_HOST"]
    assert host["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    compose = _compose()["services"]["stream"]
    assert f"127.0.0.1:{port}:{settings_from(_service_env(compose)).stream.web_port}" in compose["ports"]


def test_stream_pods_have_room_for_rocksdb_when_a_pod_is_down(settings_from: Any) -> None:
    (statefulset,) = _kind("StatefulSet")
    (stream,) = statefulset["spec"]["template"]["spec"]["containers"]
    settings = settings_from(_container_env(stream))
    replicas = statefulset["spec"]["replicas"]
    held = -(-settings.topics.partitions // max(1, replicas - 1))  # partitions per pod, one pod lost
    limit = stream["resources"]["limits"]["memory"]
    limit_mb = int(limit.removesuffix("Gi")) * 1024 if limit.endswith("Gi") else int(limit.removesuffix("Mi"))
    baseline_mb = 512  # Python, Faust, producer buffers, the decoded-history cache
    per_partition_mb = (
        settings.stream.rocksdb_block_cache_mb + ROCKSDB_WRITE_BUFFERS * settings.stream.rocksdb_write_buffer_mb
    )
    assert held * per_partition_mb + baseline_mb <= limit_mb


def test_serve_reads_the_history_page_and_every_workers_metrics(settings_from: Any) -> None:
    (deployment,) = [d for d in _kind("Deployment") if _component(d) == "serve"]
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    settings = settings_from(_container_env(container))
    assert settings.serve.host == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": settings.serve.port}
    services = {s["metadata"]["name"]: s for s in _kind("Service")}
    assert services["adcast-serve"]["spec"]["selector"] == template["metadata"]["labels"]
    assert services["adcast-serve"]["spec"]["ports"] == [
        {"name": "http", "port": settings.serve.port, "targetPort": "http"}
    ]
    # The history page through the stream pods' Service (any pod answers for any user).
    (statefulset,) = _kind("StatefulSet")
    stream = settings_from(_container_env(statefulset["spec"]["template"]["spec"]["containers"][0]))
    assert settings.serve.history_url == f"http://{statefulset['spec']['serviceName']}:{stream.stream.web_port}"
    # Every worker's metrics: headless Services, whose names resolve to each pod they select.
    covered = set()
    for url in settings.serve.metrics_urls():
        parts = urlsplit(url)
        spec = services[str(parts.hostname)]["spec"]
        assert spec["clusterIP"] == "None" and parts.path == "/metrics", url
        assert {"name": "metrics", "port": parts.port, "targetPort": "metrics"} in spec["ports"], url
        for workload in [*_kind("StatefulSet"), *_kind("Deployment")]:
            if spec["selector"].items() <= workload["spec"]["template"]["metadata"]["labels"].items():
                covered.add(_component(workload))
    assert covered == {"stream", "infer", "infer-shadow"}
    compose = _compose()["services"]
    served = settings_from(_service_env(compose["serve"]))
    assert served.serve.history_url == f"http://stream:{settings_from(_service_env(compose['stream'])).stream.web_port}"
    assert sorted(served.serve.metrics_urls()) == ["http://infer:9464/metrics", "http://stream:9464/metrics"]
    assert f"127.0.0.1:{served.serve.port}:{served.serve.port}" in compose["serve"]["ports"]
