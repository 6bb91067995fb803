"""bf16 autocast only where it pays: a CPU without bf16 units must stream and train in float32."""
import torch

from worldstream import device


def test_autocast_is_float32_where_bf16_is_slow(monkeypatch):
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    for forced, dtype in (("0", torch.float32), ("1", torch.bfloat16)):
        monkeypatch.setenv("WORLDSTREAM_BF16", forced)
        device.fast_bf16.cache_clear()
        with device.autocast("cpu", True):
            assert (x @ w).dtype == dtype
        with device.autocast("cpu", False):  # not asked for: never
            assert (x @ w).dtype == torch.float32
    device.fast_bf16.cache_clear()


def test_the_cpu_measurement_gives_a_verdict(monkeypatch):
    monkeypatch.delenv("WORLDSTREAM_BF16", raising=False)
    device.fast_bf16.cache_clear()
    assert isinstance(device.fast_bf16("cpu"), bool)  # (measured: True with AMX, False on AVX2 alone)
    device.fast_bf16.cache_clear()
