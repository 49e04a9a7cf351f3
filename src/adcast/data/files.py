"""The interchange format: a directory with events.jsonl, advertisers.jsonl and profiles.jsonl.

One JSON object per line (Avro container files `*.avro` of the same records are read too):
- event: event_id, user_id, event_time (epoch ms), event_type, advertiser_id, item_id,
  category, brand, text (each str or null)
- advertiser: advertiser_id, name, category
- profile: user_id, attributes (str -> str), updated_at (epoch ms)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from adcast.errors import ConfigError

KINDS = ("events", "advertisers", "profiles")


def _path(folder: Path, kind: str) -> Path:
    for suffix in (".jsonl", ".avro"):
        p = folder / f"{kind}{suffix}"
        if p.is_file():
            return p
    raise ConfigError(f"{folder} has no {kind}.jsonl or {kind}.avro (see the interchange format in README)")


def read_records(folder: str | Path, kind: str) -> Iterator[dict[str, Any]]:
    path = _path(Path(folder), kind)
    if path.suffix == ".avro":
        import fastavro

        with path.open("rb") as f:
            yield from fastavro.reader(f)  # type: ignore[misc]
        return
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{n}: not a JSON object: {exc}") from exc


def write_records(folder: str | Path, kind: str, records: Iterable[dict[str, Any]]) -> int:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    with (folder / f"{kind}.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
            n += 1
    return n


def write_user_slice(source: str | Path, out: str | Path, users: Iterable[str]) -> Path:
    """A data directory at `out` with `users`' events and profiles from `source`, and every
    advertiser (a model trained on a slice still knows the whole catalog)."""
    wanted = set(users)
    write_records(out, "events", (e for e in read_records(source, "events") if e["user_id"] in wanted))
    write_records(out, "profiles", (p for p in read_records(source, "profiles") if p["user_id"] in wanted))
    write_records(out, "advertisers", read_records(source, "advertisers"))
    return Path(out)
