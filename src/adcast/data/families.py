"""The synthetic world generators (`adcast generate --family NAME`), each built on its own
assumptions: `sessions` (adcast.data.synthetic, the default) and `marketplace`
(adcast.data.marketplace)."""

from __future__ import annotations

from typing import Any

from adcast.data.marketplace import MarketplaceSpec, generate_marketplace
from adcast.data.synthetic import WorldSpec, generate

FAMILIES = ("sessions", "marketplace")


def generate_family(
    family: str, users: int, advertisers: int | None, days: int, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """A world of generator family `family`; `advertisers` None takes the family's default."""
    if family == "sessions":
        return generate(WorldSpec(users, advertisers or WorldSpec.advertisers, days, seed=seed))
    if family == "marketplace":
        return generate_marketplace(MarketplaceSpec(users, advertisers or MarketplaceSpec.advertisers, days, seed=seed))
    raise ValueError(f"unknown generator family {family!r}; choose one of {', '.join(FAMILIES)}")
