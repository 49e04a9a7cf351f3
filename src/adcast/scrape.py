"""Reading a worker's Prometheus text: the samples of one scrape (Scrape) and the figures the
benchmarks and the inspector take from them (totals, sums by label, histogram quantiles).

Parsing is prometheus_client's own parser; fetching is a plain HTTP GET, sync (`scrape_url`) for
the benchmarks. `adcast serve` fetches asynchronously and hands the text to `parse`.
"""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass

from adcast.errors import ServiceError

Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass
class Scrape:
    samples: Samples

    def total(self, name: str, **labels: str) -> float:
        return sum(v for lab, v in self.samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for lab, v in self.samples.get(name, []):
            out[lab.get(label, "")] = out.get(lab.get(label, ""), 0.0) + v
        return out

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of a histogram, in order; series with other values of
        `labels` left out, the rest added up bound by bound."""
        out: dict[float, float] = {}
        for lab, v in self.samples.get(f"{name}_bucket", []):
            if all(lab.get(k) == x for k, x in labels.items()):
                out[float(lab["le"])] = out.get(float(lab["le"]), 0.0) + v
        return sorted(out.items())

    def label_values(self, name: str, label: str) -> set[str]:
        return {lab[label] for lab, _ in self.samples.get(name, []) if label in lab}


def parse(text: str) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return Scrape(samples)


def scrape_url(url: str, timeout_s: float = 5.0) -> Scrape:
    """GET a metrics endpoint (http://host:port/metrics) and parse it; ServiceError when it fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return parse(r.read().decode())
    except OSError as exc:
        raise ServiceError(f"cannot read a worker's metrics at {url}: {exc}") from exc


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The q-quantile of a histogram's (upper bound, cumulative count) pairs, interpolated linearly
    inside its bucket as Prometheus' histogram_quantile does (from 0 in the first bucket; the
    highest finite bound when it falls in the +Inf bucket); nan when the histogram is empty."""
    if not buckets or not buckets[-1][1]:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            if cumulative == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        lower, below = bound, cumulative
    return lower
