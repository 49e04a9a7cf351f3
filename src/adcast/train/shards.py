"""Training examples out of core: a data directory in, Parquet example shards out.

Memory stays bounded by one user's events and one shard's examples, whatever the size of the
data: DuckDB sorts the events by (user, time, event id) on disk, spilling past `memory_limit`,
and the sorted events stream back user by user into the same fold and prompt code the tiers run
(adcast.core.examples.iter_examples, adcast.core.prompt.render), so the examples are those the
in-memory path would build, in the same order (users by id, each user's in time order).

A shard directory holds `shard-NNNNN.parquet` files, each with the columns

  user_id     string
  event_time  int64         the target engagement's time, epoch ms
  prompt      string        the rendered prompt, as the engines score it
  target      string        the advertiser engaged
  kind        string        repeat | return | new (adcast.core.examples.target_kind)
  own         list<string>  the user's own advertisers, strongest first (for the target's smoothing)

and `manifest.json`: the data directory's fingerprint, the cutoff, the history limits, the
counts, and the advertisers (id, name, category) the examples may target.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adcast.core.examples import DEFAULT_SERVING_DELAY_MS, Example, iter_examples, target_kind
from adcast.core.history import HistoryLimits
from adcast.core.prompt import PROMPT_FORMAT_VERSION, render
from adcast.data.files import read_records
from adcast.errors import ConfigError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
EVENT_COLUMNS = {
    "event_id": "VARCHAR",
    "user_id": "VARCHAR",
    "event_time": "BIGINT",
    "event_type": "VARCHAR",
    "advertiser_id": "VARCHAR",
    "item_id": "VARCHAR",
    "category": "VARCHAR",
    "brand": "VARCHAR",
    "text": "VARCHAR",
}
_FETCH = 20_000  # sorted event rows per fetch


def data_fingerprint(data_dir: str | Path) -> str:
    """A hash of the data directory's files, read in chunks (they may be larger than memory)."""
    h = hashlib.sha256()
    for kind in ("events", "advertisers", "profiles"):
        for p in sorted(Path(data_dir).glob(f"{kind}.*")):
            h.update(p.name.encode())
            with p.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    data_fingerprint: str
    cutoff: int
    cutoff_fraction: float
    limits: dict[str, int]
    prompt_format: int
    events: int
    examples: int
    shards: list[str]
    advertisers: list[dict[str, Any]]
    serving_delay_ms: int = 0  # events this recent before a target are left out of its prompt

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        path = Path(folder) / MANIFEST
        if not path.exists():
            raise ConfigError(
                f"{folder} holds no example shards ({MANIFEST} is missing); build them with adcast examples"
            )
        return cls(**json.loads(path.read_text()))

    def history_limits(self) -> HistoryLimits:
        return HistoryLimits(**self.limits)


def _events_path(data_dir: Path) -> Path:
    found = sorted(data_dir.glob("events.*"))
    if not found:
        raise ConfigError(f"{data_dir} has no events file (events.jsonl or events.avro)")
    return found[0]


def _sorted_events(con: Any, data_dir: Path, work: Path) -> Path:
    """The events as Parquet, sorted by (user_id, event_time, event_id), sorted on disk."""
    src = _events_path(data_dir)
    out = work / "events-sorted.parquet"
    if src.suffix == ".avro":  # DuckDB reads no Avro here: stream it to Parquet first
        src = _avro_to_parquet(data_dir, work / "events.parquet")
        source = f"read_parquet('{src}')"
    else:
        columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in EVENT_COLUMNS.items()) + "}"
        source = f"read_json('{src}', format='newline_delimited', columns={columns})"
    names = ", ".join(EVENT_COLUMNS)
    con.execute(
        f"COPY (SELECT {names} FROM {source} ORDER BY user_id, event_time, event_id) "
        f"TO '{out}' (FORMAT parquet, ROW_GROUP_SIZE 100000)"
    )
    return out


def _avro_to_parquet(data_dir: Path, out: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(k, pa.int64() if v == "BIGINT" else pa.string()) for k, v in EVENT_COLUMNS.items()])
    with pq.ParquetWriter(out, schema) as writer:
        batch: list[dict[str, Any]] = []
        for r in read_records(data_dir, "events"):
            batch.append({k: r.get(k) for k in EVENT_COLUMNS})
            if len(batch) >= 100_000:
                writer.write_table(pa.Table.from_pylist(batch, schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema))
    return out


def _users(con: Any, sorted_path: Path) -> Iterator[list[dict[str, Any]]]:
    """Each user's events, users in id order, from the sorted Parquet file."""
    cursor = con.execute(f"SELECT * FROM read_parquet('{sorted_path}')")
    names = [d[0] for d in cursor.description]
    current: list[dict[str, Any]] = []
    while rows := cursor.fetchmany(_FETCH):
        for row in rows:
            record = dict(zip(names, row, strict=True))
            if current and record["user_id"] != current[0]["user_id"]:
                yield current
                current = []
            current.append(record)
    if current:
        yield current


def _cutoff(con: Any, sorted_path: Path, fraction: float) -> tuple[int, int]:
    """(events, the event time at `fraction` of all events by time): core.examples.cutoff_time."""
    (n,) = con.execute(f"SELECT count(*) FROM read_parquet('{sorted_path}')").fetchone()
    if not n:
        raise ConfigError("no events")
    k = min(n - 1, int(n * fraction))
    (t,) = con.execute(
        f"SELECT event_time FROM read_parquet('{sorted_path}') ORDER BY event_time LIMIT 1 OFFSET {k}"
    ).fetchone()
    return int(n), int(t)


class _ShardWriter:
    """Example rows gathered column by column, written as a shard once `shard_examples` are held."""

    def __init__(self, out: Path, shard_examples: int) -> None:
        import pyarrow as pa

        self.out, self.shard_examples = out, shard_examples
        self.schema = pa.schema(
            [
                ("user_id", pa.string()),
                ("event_time", pa.int64()),
                ("prompt", pa.string()),
                ("target", pa.string()),
                ("kind", pa.string()),
                ("own", pa.list_(pa.string())),
            ]
        )
        self.rows: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        self.shards: list[str] = []
        self.total = 0

    def add(self, ex: Example) -> None:
        self.rows["user_id"].append(ex.user_id)
        self.rows["event_time"].append(ex.event_time)
        self.rows["prompt"].append(render(ex))
        self.rows["target"].append(ex.target)
        self.rows["kind"].append(target_kind(ex))
        self.rows["own"].append(list(ex.own))
        self.total += 1

    def user_done(self) -> None:
        """Between users: a full shard is written (a user's examples never straddle two shards)."""
        if len(self.rows["user_id"]) >= self.shard_examples:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.rows["user_id"]:
            name = f"shard-{len(self.shards):05d}.parquet"
            pq.write_table(pa.Table.from_pydict(self.rows, self.schema), self.out / name)
            self.shards.append(name)
            for column in self.rows.values():
                column.clear()


def _advertisers(data: Path) -> list[dict[str, Any]]:
    return [
        {"advertiser_id": a["advertiser_id"], "name": a.get("name"), "category": a.get("category")}
        for a in read_records(data, "advertisers")
    ]


def build_shards(
    data_dir: str | Path,
    out_dir: str | Path,
    cutoff_fraction: float,
    limits: HistoryLimits,
    shard_examples: int = 200_000,
    memory_limit: str = "1GB",
    progress: bool = True,
    serving_delay_ms: int = DEFAULT_SERVING_DELAY_MS,
) -> Manifest:
    """Write the training examples of `data_dir` (targets before the cutoff) as shards."""
    import duckdb
    from tqdm import tqdm

    data, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.parquet"):
        old.unlink()
    work = out / ".work"
    work.mkdir(exist_ok=True)
    writer = _ShardWriter(out, shard_examples)
    started = time.monotonic()
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET temp_directory = '{work / 'spill'}'")
        con.execute("SET preserve_insertion_order = true")
        sorted_path = _sorted_events(con, data, work)
        events, cutoff = _cutoff(con, sorted_path, cutoff_fraction)
        advertisers = _advertisers(data)
        known = {a["advertiser_id"] for a in advertisers}
        profiles = {p["user_id"]: p["attributes"] for p in read_records(data, "profiles")}
        bar = tqdm(total=len(profiles) or None, unit="user", desc="examples", disable=not progress, mininterval=0.5)
        with bar:
            for user_events in _users(con, sorted_path):
                for ex in iter_examples(
                    user_events, profiles, known, limits, end=cutoff, serving_delay_ms=serving_delay_ms
                ):
                    writer.add(ex)
                writer.user_done()
                bar.update(1)
            writer.flush()
    finally:
        con.close()
        shutil.rmtree(work, ignore_errors=True)
    shards, total = writer.shards, writer.total
    manifest = Manifest(
        data_fingerprint(data),
        cutoff,
        cutoff_fraction,
        asdict(limits),
        PROMPT_FORMAT_VERSION,
        events,
        total,
        shards,
        advertisers,
        serving_delay_ms,
    )
    (out / MANIFEST).write_text(json.dumps(asdict(manifest), indent=1) + "\n")
    log.info("example shards: %s examples in %s shards, %.1f s", total, len(shards), time.monotonic() - started)
    return manifest


def shards_for_run(
    data: str | Path,
    folder: Path,
    cutoff_fraction: float,
    limits: HistoryLimits,
    main: bool,
    wait: Callable[[], None],
    progress: bool,
    serving_delay_ms: int = DEFAULT_SERVING_DELAY_MS,
) -> tuple[Path, Manifest]:
    """The example shards a training run reads: `data` itself when it holds shards (adcast
    examples), else shards of the data directory built into `folder` (kept for a resume) by the
    main process while the others `wait`. Shards of another cutoff or other limits are refused."""
    given = Path(data)
    if not (given / MANIFEST).exists():
        if main:
            wanted = (data_fingerprint(given), cutoff_fraction, asdict(limits), serving_delay_ms)
            held = Manifest.load(folder) if (folder / MANIFEST).exists() else None
            if held is None or (held.data_fingerprint, *_rule(held)) != wanted:
                build_shards(
                    given, folder, cutoff_fraction, limits, progress=progress, serving_delay_ms=serving_delay_ms
                )
        wait()
        given = folder
    manifest = Manifest.load(given)
    if _rule(manifest) != (cutoff_fraction, asdict(limits), serving_delay_ms):
        raise ConfigError(
            f"the example shards in {given} were built with cutoff fraction {manifest.cutoff_fraction}, "
            f"history limits {manifest.limits} and a serving delay of {manifest.serving_delay_ms} ms; this run "
            f"asks for {cutoff_fraction}, {asdict(limits)} and {serving_delay_ms} ms: "
            "rebuild them (adcast examples) with the run's settings"
        )
    return given, manifest


def _rule(manifest: Manifest) -> tuple[float, dict[str, int], int]:
    """What decides which examples the shards hold, besides the data."""
    return manifest.cutoff_fraction, manifest.limits, manifest.serving_delay_ms
