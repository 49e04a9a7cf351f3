"""The `marketplace` family: a synthetic world built on other assumptions than `sessions`
(adcast.data.synthetic), so that a modelling choice justified on one can be checked on the other.

- A long tail: many advertisers (default 1,000) over 40 categories in 8 departments, with one
  steep Zipf popularity over all of them (exponent 1.1), so most advertisers are seen a few times.
- Different profiles (segment, device, region) that carry only a weak signal: region and device
  tilt which departments a user shops.
- Very short histories: sessions per user are geometric, so about a third of users have one or two.
- Impressions carry intent: a session browses one category for one to three pages; each page shows
  two to six ads, mostly of that category (popular ones, and the user's own advertisers of it
  retargeted), sometimes one from elsewhere. A click is always on an ad shown on the same page,
  and a second page continues the category the first one showed.
- Sparse text: brands on two events in five, categories missing on one in seven, item titles on a
  third of views, searches in one session in ten.
- Repeat purchases: some users have a staple (an advertiser of a consumables category) that they
  buy again every few days, with no impression before it.
Everything is drawn from one seeded random generator: the same seed gives the same world.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adcast.data.synthetic import START_MS

DEPARTMENTS = ["home", "beauty", "tech", "sport", "kids", "food", "style", "auto"]
CATEGORY_WORDS = ["lamps", "rugs", "tools", "care", "audio", "tea", "bags", "tyres", "toys", "snacks"]
CONSUMABLE_DEPARTMENTS = {"beauty", "food", "kids"}
SEGMENTS = ["new", "regular", "loyal"]
DEVICES = ["ios", "android", "web"]
REGIONS = ["north", "south", "east", "west", "central"]
_NAME_PARTS = ["bright", "nova", "kiro", "lumo", "vast", "oak", "pine", "zest", "halo", "rift", "mint", "aster"]


@dataclass(frozen=True)
class MarketplaceSpec:
    users: int = 2000
    advertisers: int = 1000
    days: int = 30
    sessions_per_user: float = 5.0
    seed: int = 7


def _catalog(rng: random.Random, n: int) -> tuple[list[dict[str, Any]], dict[str, list[int]], list[float]]:
    categories = [f"{d}.{w}" for d in DEPARTMENTS for w in rng.sample(CATEGORY_WORDS, 5)]
    advertisers: list[dict[str, Any]] = []
    by_cat: dict[str, list[int]] = {c: [] for c in categories}
    for i in range(n):
        cat = categories[i % len(categories)] if i < len(categories) else rng.choice(categories)
        name = f"{rng.choice(_NAME_PARTS)}{rng.choice(_NAME_PARTS)} {cat.split('.')[1]}"
        advertisers.append({"advertiser_id": f"m{i:05d}", "name": name.title(), "category": cat})
        by_cat[cat].append(i)
    ranks = rng.sample(range(n), n)
    popularity = [1.0 / (1 + ranks[i]) ** 1.1 for i in range(n)]
    return advertisers, by_cat, popularity


def generate_marketplace(spec: MarketplaceSpec) -> dict[str, list[dict[str, Any]]]:
    world = _World(spec)
    for u in range(spec.users):
        world.add_user(f"m{u:05d}")
    events = world.events
    events.sort(key=lambda e: (e["event_time"], e["user_id"]))
    width = max(6, int(math.log10(max(1, len(events)))) + 1)
    for n, e in enumerate(events):
        e["event_id"] = f"e{n:0{width}d}"
    return {"events": events, "advertisers": world.advertisers, "profiles": world.profiles}


class _World:
    """The world as it is drawn: the catalog, the users so far and their events. Every draw comes
    from the one seeded generator, in a fixed order, so the methods keep the order of their calls."""

    def __init__(self, spec: MarketplaceSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.advertisers, self.by_cat, self.popularity = _catalog(self.rng, spec.advertisers)
        self.categories = list(self.by_cat)
        self.events: list[dict[str, Any]] = []
        self.profiles: list[dict[str, Any]] = []
        self.span_ms = spec.days * 24 * 3600 * 1000

    def emit(self, user_id: str, t: int, kind: str, a: int | None, text: str | None = None) -> None:
        rng = self.rng
        adv = self.advertisers[a] if a is not None else None
        self.events.append(
            {
                "event_id": "",
                "user_id": user_id,
                "event_time": t,
                "event_type": kind,
                "advertiser_id": adv["advertiser_id"] if adv else None,
                "item_id": f"p{a}-{rng.randint(0, 50)}" if adv else None,
                "category": adv["category"] if adv and rng.random() > 1 / 7 else None,
                "brand": adv["name"].split()[0].lower() if adv and rng.random() < 0.4 else None,
                "text": text,
            }
        )

    def add_user(self, user_id: str) -> None:
        """A user's profile, sessions and staple purchases."""
        rng, categories = self.rng, self.categories
        segment, device, region = rng.choice(SEGMENTS), rng.choice(DEVICES), rng.choice(REGIONS)
        self.profiles.append(
            {
                "user_id": user_id,
                "attributes": {"segment": segment, "device": device, "region": region},
                "updated_at": START_MS,
            }
        )
        tilt = random.Random(f"{region}/{device}")  # a weak, deterministic tilt per (region, device)
        home = DEPARTMENTS[tilt.randrange(len(DEPARTMENTS))] if rng.random() < 0.4 else rng.choice(DEPARTMENTS)
        interests = rng.sample([c for c in categories if c.startswith(home)], 2) + [rng.choice(categories)]
        own: dict[str, list[int]] = {}
        n_sessions = 1 + int(math.log(1 - rng.random()) / math.log(1 - 1 / self.spec.sessions_per_user))
        t_sessions = sorted(rng.randrange(self.span_ms) for _ in range(n_sessions))
        cat = rng.choice(interests)
        for start in t_sessions:
            cat = self._session(user_id, START_MS + start, cat, interests, own)
        _staple_purchases(rng, user_id, self.advertisers, categories, self.by_cat, self.span_ms, self.emit)

    def _session(self, user_id: str, t: int, cat: str, interests: list[str], own: dict[str, list[int]]) -> str:
        """One session from time `t`: maybe a search, then one to three pages of a category (the
        last one's, `cat`, or another); returns the category browsed."""
        rng = self.rng
        if rng.random() > 0.4:
            cat = rng.choice(interests) if rng.random() < 0.85 else rng.choice(self.categories)
        if rng.random() < 0.1:
            t += rng.randint(2_000, 30_000)
            self.emit(user_id, t, "search", None, text=cat.replace(".", " "))
        for _page in range(rng.randint(1, 3)):
            t = self._page(user_id, t, cat, own)
        return cat

    def _page(self, user_id: str, t: int, cat: str, own: dict[str, list[int]]) -> int:
        """A page's impressions and maybe a click on one of them (then perhaps a view, a cart or a
        checkout); `own` gains the clicked advertiser; returns the time of the page's last event."""
        rng = self.rng
        shown = self._shown(cat, own)
        for a in shown:
            t += rng.randint(500, 5_000)
            self.emit(user_id, t, "impression", a)
        if rng.random() < 0.5:
            in_cat = [a for a in shown if self.advertisers[a]["category"] == cat] or shown
            weights = [3.0 if a in own.get(cat, ()) else 1.0 for a in in_cat]
            a = rng.choices(in_cat, weights=weights)[0]
            t += rng.randint(2_000, 40_000)
            self.emit(user_id, t, "click", a)
            if a not in own.setdefault(cat, []):
                own[cat].append(a)
            if rng.random() < 0.3:
                title = f"{self.advertisers[a]['name'].lower()} item" if rng.random() < 0.33 else None
                self.emit(user_id, t + rng.randint(1_000, 20_000), "view", a, text=title)
            r = rng.random()
            if r < 0.15:
                self.emit(user_id, t + rng.randint(20_000, 60_000), "add_to_cart", a)
            elif r < 0.23:
                self.emit(user_id, t + rng.randint(20_000, 60_000), "checkout", a)
        return t

    def _shown(self, cat: str, own: dict[str, list[int]]) -> list[int]:
        """Two to six ads: the user's own of the category retargeted, one from anywhere, or a popular one of it."""
        rng, pool = self.rng, self.by_cat[cat]
        shown: list[int] = []
        for _slot in range(rng.randint(2, 6)):
            if own.get(cat) and rng.random() < 0.3:
                shown.append(rng.choice(own[cat]))
            elif rng.random() < 0.15:
                shown.append(rng.randrange(self.spec.advertisers))
            else:
                shown.append(rng.choices(pool, weights=[self.popularity[i] for i in pool])[0])
        return shown


def _staple_purchases(
    rng: random.Random,
    user_id: str,
    advertisers: list[dict[str, Any]],
    categories: list[str],
    by_cat: dict[str, list[int]],
    span_ms: int,
    emit: Callable[..., None],
) -> None:
    """Two users in five buy a staple again and again: a view of it, then a checkout."""
    if rng.random() >= 0.4:
        return
    cat = rng.choice([c for c in categories if c.split(".")[0] in CONSUMABLE_DEPARTMENTS])
    staple = rng.choice(by_cat[cat])
    period_ms = rng.randint(4, 9) * 24 * 3600 * 1000
    t = START_MS + rng.randrange(period_ms)
    while t < START_MS + span_ms:
        emit(user_id, t, "view", staple)
        emit(user_id, t + rng.randint(10_000, 120_000), "checkout", staple)
        t += period_ms + rng.randint(-24, 24) * 3600 * 1000
