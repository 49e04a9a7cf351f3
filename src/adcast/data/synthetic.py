"""A synthetic ads world with structure a model can learn and frequency baselines cannot.

- Advertisers belong to categories; each has a brand-like name and a popularity (Zipf).
- A user's profile (age band, gender, city tier) biases which categories they care about.
- Each user holds 2-3 latent interests (categories) that drift: now and then one is replaced.
- Sessions: the user picks an interest, often searches for it first (query words name the
  category), sees impressions (mostly noise), clicks an ad of that category (then views the item
  page, and sometimes saves, carts or buys), preferring advertisers they engaged with before but
  regularly discovering new ones, which the search words announce. Some sessions only browse.
Everything is drawn from one seeded random generator: the same seed gives the same world.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

CATEGORIES: dict[str, list[str]] = {
    "running": ["running", "shoes", "trainers", "marathon", "jogging"],
    "outdoor": ["hiking", "tent", "camping", "backpack", "trail"],
    "skincare": ["serum", "moisturizer", "sunscreen", "cleanser", "skin"],
    "makeup": ["lipstick", "mascara", "foundation", "palette", "blush"],
    "phones": ["phone", "smartphone", "charger", "case", "5g"],
    "laptops": ["laptop", "notebook", "ultrabook", "keyboard", "ssd"],
    "gaming": ["console", "controller", "games", "headset", "rgb"],
    "baby": ["diapers", "stroller", "bottle", "baby", "crib"],
    "pets": ["dog", "cat", "leash", "kibble", "litter"],
    "kitchen": ["pan", "knife", "blender", "cookware", "kettle"],
    "coffee": ["espresso", "beans", "grinder", "latte", "roast"],
    "fashion": ["dress", "jacket", "jeans", "sweater", "coat"],
    "watches": ["watch", "chronograph", "strap", "smartwatch", "dial"],
    "travel": ["flights", "hotel", "luggage", "suitcase", "resort"],
    "fitness": ["dumbbell", "yoga", "mat", "protein", "gym"],
    "books": ["novel", "paperback", "ebook", "thriller", "poetry"],
}
_SYLLABLES = [
    "ve",
    "lo",
    "ra",
    "ki",
    "mo",
    "ta",
    "zen",
    "bri",
    "ho",
    "lu",
    "nor",
    "vi",
    "sa",
    "dro",
    "pel",
    "qua",
    "tri",
    "mi",
    "ga",
    "fen",
    "cor",
    "ul",
    "ax",
    "by",
]
AGES = ["18-24", "25-34", "35-44", "45-54", "55+"]
GENDERS = ["f", "m"]
CITY_TIERS = ["tier1", "tier2", "tier3"]
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
# Bump when the generator changes what a seed produces (caches of generated worlds key on it).
WORLD_VERSION = 2


@dataclass(frozen=True)
class WorldSpec:
    users: int = 2000
    advertisers: int = 200
    days: int = 30
    sessions_per_user: float = 8.0
    seed: int = 7


def _name(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        if name not in taken:
            taken.add(name)
            return name


def _category_bias(age: str, gender: str) -> dict[str, float]:
    """Deterministic preference weights per (age, gender): the profile carries real signal."""
    cats = list(CATEGORIES)
    rng = random.Random(f"{age}/{gender}")
    favourites = set(rng.sample(cats, 4))
    return {c: (6.0 if c in favourites else 1.0) for c in cats}


class _Session:
    """Appends one user's events, each a few seconds to a minute and a half after the last."""

    def __init__(
        self, rng: random.Random, advertisers: list[dict[str, Any]], user_id: str, t: int, out: list[dict[str, Any]]
    ) -> None:
        self.rng, self.advertisers, self.user_id, self.t, self.out = rng, advertisers, user_id, t, out

    def emit(self, kind: str, a: int | None, text: str | None = None, c: str | None = None) -> None:
        self.t += self.rng.randint(2_000, 90_000)
        adv = self.advertisers[a] if a is not None else None
        self.out.append(
            {
                "event_id": "",
                "user_id": self.user_id,
                "event_time": self.t,
                "event_type": kind,
                "advertiser_id": adv["advertiser_id"] if adv else None,
                "item_id": f"i{a}-{self.rng.randint(0, 20)}" if adv else None,
                "category": c,
                "brand": adv["name"].lower() if adv else None,
                "text": text,
            }
        )


def generate(spec: WorldSpec) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(spec.seed)
    cats = list(CATEGORIES)
    taken: set[str] = set()
    advertisers: list[dict[str, Any]] = []
    by_cat: dict[str, list[int]] = {c: [] for c in cats}
    for i in range(spec.advertisers):
        cat = cats[i % len(cats)] if i < len(cats) else rng.choice(cats)
        advertisers.append({"advertiser_id": f"a{i:04d}", "name": _name(rng, taken), "category": cat})
        by_cat[cat].append(i)
    # Zipf popularity inside each category.
    popularity = {
        i: 1.0 / (1 + rank) ** 0.8 for c in cats for rank, i in enumerate(rng.sample(by_cat[c], len(by_cat[c])))
    }

    profiles: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    span_ms = spec.days * 24 * 3600 * 1000
    for u in range(spec.users):
        user_id = f"u{u:05d}"
        age, gender, tier = rng.choice(AGES), rng.choice(GENDERS), rng.choice(CITY_TIERS)
        profiles.append(
            {"user_id": user_id, "attributes": {"age": age, "gender": gender, "city": tier}, "updated_at": START_MS}
        )
        bias = _category_bias(age, gender)
        interests = rng.choices(cats, weights=[bias[c] for c in cats], k=rng.randint(2, 3))
        own: dict[str, list[int]] = {}  # category -> advertisers this user engaged with
        n_sessions = max(1, int(rng.expovariate(1.0 / spec.sessions_per_user)) + 1)
        starts = sorted(rng.randrange(span_ms) for _ in range(n_sessions))
        for start in starts:
            if rng.random() < 0.15:  # drift: one interest is replaced
                interests[rng.randrange(len(interests))] = rng.choices(cats, weights=[bias[c] for c in cats])[0]
            cat = rng.choice(interests)
            discover = not own.get(cat) or rng.random() < 0.35
            if discover:
                pool = by_cat[cat]
                adv = rng.choices(pool, weights=[popularity[i] for i in pool])[0]
            else:
                adv = rng.choice(own[cat])
            brand = advertisers[adv]["name"].lower()

            session = _Session(rng, advertisers, user_id, START_MS + start, events)
            emit = session.emit

            for _ in range(rng.randint(1, 4)):  # noise impressions from anywhere
                noise = rng.randrange(spec.advertisers)
                emit("impression", noise, c=advertisers[noise]["category"])
            if discover or rng.random() < 0.3:
                words = rng.sample(CATEGORIES[cat], 2) + ([brand] if not discover and rng.random() < 0.5 else [])
                emit("search", None, text=" ".join(words), c=None)
            emit("impression", adv, c=cat)
            title = f"{brand} {rng.choice(CATEGORIES[cat])}"
            if rng.random() < 0.2:  # browsed the item without engaging
                emit("view", adv, text=title, c=cat)
                continue
            # The engagement comes first; the item page (view) follows the click.
            emit("click", adv, c=cat)
            emit("view", adv, text=title, c=cat)
            own.setdefault(cat, [])
            if adv not in own[cat]:
                own[cat].append(adv)
            r = rng.random()
            if r < 0.25:
                emit("save", adv, c=cat)
            elif r < 0.45:
                emit("add_to_cart", adv, c=cat)
                if rng.random() < 0.5:
                    emit("checkout", adv, c=cat)
    events.sort(key=lambda e: (e["event_time"], e["user_id"]))
    width = max(6, int(math.log10(max(1, len(events)))) + 1)
    for n, e in enumerate(events):
        e["event_id"] = f"e{n:0{width}d}"
    return {"events": events, "advertisers": advertisers, "profiles": profiles}
