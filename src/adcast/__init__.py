"""adcast: fresh LLM advertiser affinities in a Redis online feature store."""

__version__ = "0.1.0"
