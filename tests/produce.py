"""Producing raw event messages to a test's events topic, with where each one landed."""

from adcast.replay import event_producer


def produce(settings, values: list[tuple[str, bytes | None]]) -> list[tuple[int, int]]:
    """Produce (key, value) pairs; returns each one's (partition, offset), in production order."""
    producer = event_producer(settings)
    delivered: dict[int, tuple[int, int]] = {}
    for i, (key, value) in enumerate(values):

        def done(err, msg, i=i):
            assert err is None, err
            delivered[i] = (msg.partition(), msg.offset())

        producer.produce(settings.topics.name("events"), key=key.encode(), value=value, on_delivery=done)
    assert producer.flush(10) == 0
    return [delivered[i] for i in range(len(values))]
