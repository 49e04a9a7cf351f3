"""Run the stream tier as a Faust worker process (what `adcast stream` calls)."""

from __future__ import annotations

import faust

from adcast import metrics
from adcast.config import Settings
from stream.app import create_app


def run(settings: Settings, loglevel: str = "info") -> None:
    app = create_app(settings)
    metrics.serve(settings.metrics_port)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()  # returns only by exiting the process
