"""Example shards (adcast examples): built out of core by DuckDB and the core fold, they hold the
examples the in-memory path builds, in its order, and training from them is training from the data."""

import json
import os
import shutil
import subprocess
import sys

import fastavro
import pyarrow.parquet as pq
import pytest

from adcast.config import to_env
from adcast.core.examples import cutoff_time, iter_examples, target_kind
from adcast.core.history import HistoryLimits
from adcast.core.prompt import render
from adcast.data.files import read_records
from adcast.errors import ConfigError
from adcast.train.checkpoints import CHECKPOINT_DIR
from adcast.train.shards import EVENT_COLUMNS, Manifest, build_shards

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")


def shard_rows(folder, manifest):
    return [row for name in manifest.shards for row in pq.read_table(folder / name).to_pylist()]


def test_shards_hold_the_in_memory_examples_in_order(small_world, tmp_path):
    limits = HistoryLimits()
    manifest = build_shards(small_world, tmp_path / "shards", 0.8, limits, shard_examples=500, progress=False)

    events = list(read_records(small_world, "events"))
    profiles = {p["user_id"]: p["attributes"] for p in read_records(small_world, "profiles")}
    known = {a["advertiser_id"] for a in read_records(small_world, "advertisers")}
    cutoff = cutoff_time((e["event_time"] for e in events), 0.8)
    expected = list(iter_examples(events, profiles, known, limits, end=cutoff))
    rows = shard_rows(tmp_path / "shards", manifest)

    assert (manifest.cutoff, manifest.events, manifest.examples) == (cutoff, len(events), len(expected))
    sizes = [pq.read_metadata(tmp_path / "shards" / name).num_rows for name in manifest.shards]
    assert len(sizes) > 1 and min(sizes[:-1]) >= 500  # a shard closes at the first user past the size
    assert [(r["user_id"], r["event_time"], r["prompt"], r["target"], r["kind"], r["own"]) for r in rows] == [
        (e.user_id, e.event_time, render(e), e.target, target_kind(e), list(e.own)) for e in expected
    ]
    assert Manifest.load(tmp_path / "shards") == manifest


def test_avro_events_give_the_same_shards(small_world, tmp_path):
    avro_world = tmp_path / "avro"
    avro_world.mkdir()
    for kind in ("advertisers", "profiles"):
        shutil.copy(small_world / f"{kind}.jsonl", avro_world)
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "E",
            "fields": [
                {"name": k, "type": "long" if v == "BIGINT" else ["null", "string"]} for k, v in EVENT_COLUMNS.items()
            ],
        }
    )
    with (avro_world / "events.avro").open("wb") as f:
        fastavro.writer(f, schema, ({k: e.get(k) for k in EVENT_COLUMNS} for e in read_records(small_world, "events")))
    a = build_shards(small_world, tmp_path / "a", 0.8, HistoryLimits(), progress=False)
    b = build_shards(avro_world, tmp_path / "b", 0.8, HistoryLimits(), progress=False)
    assert shard_rows(tmp_path / "a", a) == shard_rows(tmp_path / "b", b)


def test_training_from_shards_is_training_from_the_data(small_world, tmp_path):
    from safetensors.torch import load_file

    from adcast.train.trainer import TrainConfig, train

    cfg = TrainConfig(epochs=1, seed=3, validation=0.2)
    build_shards(small_world, tmp_path / "shards", cfg.cutoff_fraction, HistoryLimits(), progress=False)
    from_data = train(small_world, tmp_path / "from-data", cfg, progress=False)
    from_shards = train(tmp_path / "shards", tmp_path / "from-shards", cfg, progress=False)

    assert from_data.examples == from_shards.examples > 0
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("from-data", "from-shards"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta = [json.loads((tmp_path / d / "adcast.json").read_text()) for d in ("from-data", "from-shards")]
    assert meta[0]["copy_weights"] == meta[1]["copy_weights"]
    assert meta[0]["trained"]["data_fingerprint"] == meta[1]["trained"]["data_fingerprint"]
    assert not (tmp_path / "from-data" / CHECKPOINT_DIR).exists()  # the shards built for the run are gone
    assert (tmp_path / "shards" / "manifest.json").exists()  # shards given are the caller's

    with pytest.raises(ConfigError, match="rebuild them"):
        train(tmp_path / "shards", tmp_path / "other", TrainConfig(epochs=1, cutoff_fraction=0.5), progress=False)


def test_cli_examples_prints_its_summary(settings, small_world, tmp_path):
    env = {**os.environ, **to_env(settings)}
    args = [sys.executable, "-m", "adcast.cli", "examples", "--data", str(small_world), "--out", str(tmp_path / "s")]
    out = subprocess.run([*args, "--quiet", "--shard-examples", "1000"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    manifest = Manifest.load(tmp_path / "s")
    assert out.stdout.startswith(f"{manifest.examples:,} examples from {manifest.events:,} events in ")
