"""Faust's aiokafka transport with a configurable fetch wait (scheme `adcast://`).

Faust creates its consumer with `fetch_max_wait_ms=1500` hard-coded. Apache Kafka answers a
fetch as soon as data arrives, so that is harmless there; brokers that hold a fetch for the whole
wait when it starts empty (the local Tansu broker does) add up to 1.5 s per hop, and the stream
tier has two hops (event, then the tick that emits). Registered through Faust's own plugin point,
the `faust.transports` entry point (see pyproject.toml).
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

# Set by stream.app.create_app from ADCAST_STREAM__FETCH_MAX_WAIT_MS (one app per process).
FETCH_MAX_WAIT_MS = 100


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when it builds its fetcher in start(), after this.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
