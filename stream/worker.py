"""Run the stream tier as a Faust worker process (what `adcast stream` calls)."""

from __future__ import annotations

import gc

import faust

from adcast import metrics
from adcast.config import Settings
from stream.app import create_app, create_count_app
from stream.transport import add_lag_timer


def run(settings: Settings, loglevel: str = "info", count_only: bool = False) -> None:
    app = create_count_app(settings) if count_only else create_app(settings)
    t = settings.topics
    add_lag_timer(app, topics={t.name("events"), t.name("profiles"), t.name("ticks")})
    metrics.serve(settings.metrics_port)
    # Faust allocates several objects per message: with the default threshold (700) the collector
    # ran ~20 times a second and took ~3% of the worker's time in `bench ingest`. The start-up heap
    # (modules, the app) is frozen out of every collection.
    gc.set_threshold(20_000, 20, 10)
    gc.freeze()
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()  # returns only by exiting the process
