"""Run the stream tier as a Faust worker process (what `adcast stream` calls)."""

from __future__ import annotations

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
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()  # returns only by exiting the process
