"""How much KV cache the vLLM engine asks for (pure logic; vLLM itself is not imported)."""

from adcast.engines.vllm import CPU_KV_CACHE_GIB, _kv_cache_bytes


def test_the_cpu_gets_a_bounded_cache_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    # vLLM's own CPU default would reserve 92 % of the machine and refuse to start beside the stream tier
    assert _kv_cache_bytes("cpu", 0) == int(CPU_KV_CACHE_GIB * 2**30)
    assert _kv_cache_bytes("cpu", 0.5) == 2**29
    assert _kv_cache_bytes("cuda", 0) is None  # vLLM's share of GPU memory
    assert _kv_cache_bytes("cuda", 4) == 4 * 2**30


def test_vllms_own_cpu_variable_is_left_to_vllm(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    assert _kv_cache_bytes("cpu", 0) is None
