"""Loaders for the two real Taobao display-ad samples (Alibaba "Ali_Display_Ad_Click").

Both are ad impressions joined with the user's profile and behaviour history (categories and
brands, no timestamps). Each becomes a world in the interchange format:
- profile fields become attributes (missing ones are left out);
- the behaviour history becomes events carrying the category and brand (`cat=…`, `brand=…` in
  the prompt); `taobao_test_data` has no action types, so they are `view`s; the alimama sample's
  codes map 1 view, 2 add_to_cart, 3 save, 4 checkout;
- the row's advertiser (`customer`) is the target: an engagement event after the history. With
  `targets="shown"` (default) every row's advertiser is a target (the sample has few clicks:
  533 of 10,000), recorded as a click; with `targets="clicked"` only clicked rows are, and the
  others become impressions.
Users are split, not events: about 80% of the events (whole users, in a stable hashed order) come
first in time, the rest after, so the default 0.8 cutoff of `adcast eval` tests on unseen users.
The dataset has no advertiser names: each advertiser is named by its ad's category and brand, as
the prompt writes them, so its token starts from those tokens' embeddings.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PROFILE_FIELDS = (
    "cms_segid",
    "cms_group_id",
    "gender",
    "age_level",
    "pvalue_level",
    "shopping_level",
    "occupation",
    "city_level",
)
ALIMAMA_ACTIONS = {"1": "view", "2": "add_to_cart", "3": "save", "4": "checkout"}
START_MS = 1_494_000_000_000  # May 2017, the dataset's collection period
GAP_MS = 60_000


def _missing(value: str) -> bool:
    return value.strip() in ("", "NULL", "0", "-1")


def _brand(value: str) -> str | None:
    return None if _missing(value) else f"b{value.strip()}"


def _ad_name(category: str, brand: str | None) -> str:
    # No names in the dataset: name the advertiser by its ad's category and brand, written the
    # way the prompt writes them, so its token starts from those tokens' embeddings.
    return f"cat={category}" + (f" brand={brand}" if brand else "")


def _row_world(rows: Iterable[dict[str, Any]], targets: str) -> dict[str, list[dict[str, Any]]]:
    """rows: user_id, profile (dict), history [(event_type, category, brand)], advertiser_id,
    category, brand, clicked."""
    users: dict[str, dict[str, Any]] = {}
    ads: dict[str, dict[str, Any]] = {}
    for row in rows:
        user = users.setdefault(row["user_id"], {"profile": {}, "history": [], "targets": []})
        user["profile"].update(row["profile"])
        if len(row["history"]) > len(user["history"]):
            user["history"] = row["history"]  # rows of a user repeat the same history; keep the longest
        user["targets"].append(row)
        ads.setdefault(
            row["advertiser_id"],
            {
                "advertiser_id": row["advertiser_id"],
                "name": _ad_name(row["category"], row["brand"]),
                "category": row["category"],
            },
        )
    order = sorted(users, key=lambda u: hashlib.sha256(u.encode()).hexdigest())
    sizes = {u: len(users[u]["history"]) + len(users[u]["targets"]) for u in order}
    total = sum(sizes.values())
    events: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    t, seen = START_MS, 0
    for u in order:
        data = users[u]
        profiles.append({"user_id": u, "attributes": data["profile"], "updated_at": START_MS})
        for kind, category, brand in data["history"]:
            t += GAP_MS
            events.append(_event(len(events), u, t, kind, None, category, brand))
        for row in data["targets"]:
            t += GAP_MS
            kind = "click" if targets == "shown" or row["clicked"] else "impression"
            events.append(_event(len(events), u, t, kind, row["advertiser_id"], row["category"], row["brand"]))
        seen += sizes[u]
        if seen >= 0.8 * total > seen - sizes[u]:
            t += 30 * 24 * 3600 * 1000  # a clear gap between the train and test users
    return {"events": events, "advertisers": list(ads.values()), "profiles": profiles}


def _event(
    n: int, user: str, t: int, kind: str, adv: str | None, category: str | None, brand: str | None
) -> dict[str, Any]:
    return {
        "event_id": f"tb{n:07d}",
        "user_id": user,
        "event_time": t,
        "event_type": kind,
        "advertiser_id": adv,
        "item_id": None,
        "category": category,
        "brand": brand,
        "text": None,
    }


def _row(
    user_id: str,
    customer: str,
    category: str,
    brand: str,
    clicked: bool,
    history: list[tuple[str, str, str | None]],
    profile: list[str],
    zero_is_missing: bool,
) -> dict[str, Any]:
    def missing(v: str) -> bool:
        return _missing(v) if zero_is_missing else not v.strip()

    return {
        "user_id": user_id,
        "advertiser_id": f"adv{customer}",
        "category": f"c{category}",
        "brand": _brand(brand),
        "clicked": clicked,
        "history": history,
        "profile": {k: v.strip() for k, v in zip(PROFILE_FIELDS, profile, strict=True) if not missing(v)},
    }


def load_taobao_test(path: str | Path, targets: str = "shown") -> dict[str, list[dict[str, Any]]]:
    """`taobao_test_data`: CSV without header, 20 columns (see the sample's README)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.reader(f):
            if len(r) < 20:
                continue
            cats, brands = r[17].split("|") if r[17] else [], r[18].split("|") if r[18] else []
            history = [
                ("view", f"c{c}", _brand(b))
                for c, b in zip(cats, brands + [""] * len(cats), strict=False)
                if not _missing(c)
            ]
            rows.append(_row(f"tb{r[8]}", r[6], r[4], r[7], r[0] == "1", history, r[9:17], zero_is_missing=False))
    return _row_world(rows, targets)


def load_alimama(path: str | Path, targets: str = "shown") -> dict[str, list[dict[str, Any]]]:
    """`alimama_sampled_train.txt`: the DMR sample format, 267 columns."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.reader(f):
            if len(r) < 267:
                continue
            history = [
                (ALIMAMA_ACTIONS.get(r[i], "view"), f"c{r[50 + i]}", _brand(r[100 + i]))
                for i in range(50)
                if r[150 + i] == "1" and r[i] != "0"
            ]
            rows.append(
                _row(f"am{r[250]}", r[262], r[260], r[263], r[266] == "1", history, r[251:259], zero_is_missing=True)
            )
    return _row_world(rows, targets)


def load(path: str | Path, targets: str = "shown") -> dict[str, list[dict[str, Any]]]:
    """Pick the loader by the file's shape."""
    with open(path, newline="") as f:
        width = len(next(csv.reader(f)))
    if width >= 267:
        return load_alimama(path, targets)
    if width >= 20:
        return load_taobao_test(path, targets)
    raise ValueError(f"{path}: {width} columns is neither taobao_test_data (20) nor the alimama sample (267)")
