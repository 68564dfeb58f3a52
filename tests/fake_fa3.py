"""A stand-in for FlashAttention-3's ``flash_attn_interface`` on the CPU: exact attention on
whatever it is given (dequantized when FP8), with FA3's calling contract."""

import sys
import types

import pytest
import torch


class FakeFA3:
    """flash_attn_func with FA3's contract: (B, S, H, D) in, (out, lse) back; FP8 inputs come with
    (B, H) descales and give bf16. Records the dtype of every call."""

    def __init__(self):
        self.calls = []

    def flash_attn_func(self, q, k, v, softmax_scale=None, causal=False, q_descale=None, k_descale=None,
                        v_descale=None, return_attn_probs=False):
        self.calls.append(q.dtype)
        dtype = q.dtype
        if q.dtype == torch.float8_e4m3fn:
            q, k, v = (t.float() * d[:, None, :, None] for t, d in ((q, q_descale), (k, k_descale), (v, v_descale)))
            dtype = torch.bfloat16
        q, k, v = (t.transpose(1, 2).double() for t in (q, k, v))
        scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
        scores = (q @ k.transpose(-1, -2)) * scale
        out = torch.softmax(scores, -1) @ v
        return out.transpose(1, 2).to(dtype), torch.logsumexp(scores, -1).float()


@pytest.fixture
def fake_fa3(monkeypatch):
    """Installs a FakeFA3 as ``flash_attn_interface`` for one test and returns it."""
    fake = FakeFA3()
    monkeypatch.setitem(sys.modules, "flash_attn_interface", types.SimpleNamespace(flash_attn_func=fake.flash_attn_func))
    return fake
