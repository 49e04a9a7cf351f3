"""The pure core: events, history folding, triggers, prompt rendering, micro-batching.

Nothing here imports I/O libraries (faust, aiokafka, confluent-kafka, redis, torch, vllm);
tests/unit/test_core_purity.py enforces it. Both tiers' environments import this package.
"""
