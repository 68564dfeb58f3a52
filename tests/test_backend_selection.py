"""``backend="auto"``: the fastest backend that can serve a call, in the measured order."""

from types import SimpleNamespace

import pytest
import torch

from accel import backends


@pytest.mark.parametrize(("head_dim", "kernel", "first"), [(128, "gluon", "triton"), (128, "triton", "fa3"),
                                                           (64, "gluon", "fa3")])
def test_auto_puts_our_gluon_kernel_before_fa3_where_measured_as_fast(head_dim, kernel, first, monkeypatch):
    """On a GPU, calls our Gluon kernel serves at D = 128 go to it before FA3 (run 11: as fast or
    faster whole calls); at D = 64, or where only the Triton kernel would serve, FA3 goes first."""
    monkeypatch.setattr(backends, "kernel_for", lambda call: kernel)
    monkeypatch.setattr(backends, "backend_reason", lambda backend, call: None)  # both can serve
    call = SimpleNamespace(device=torch.device("cuda"), head_dim=head_dim)
    assert backends.auto_order(call)[0] == first and set(backends.auto_order(call)) == {"fa3", "triton"}
    backend, why = backends.select_backend(call, "auto")
    assert backend is backends.BACKENDS[first] and why == ""


def test_auto_falls_through_to_the_next_backend_and_says_why_none_serves(monkeypatch):
    monkeypatch.setattr(backends, "kernel_for", lambda call: "gluon")
    call = SimpleNamespace(device=torch.device("cuda"), head_dim=128)
    monkeypatch.setattr(backends, "backend_reason", lambda backend, call: None if backend.name == "fa3" else "no")
    assert backends.select_backend(call, "auto") == (backends.BACKENDS["fa3"], "")
    monkeypatch.setattr(backends, "backend_reason", lambda backend, call: f"{backend.name} lacks it")
    backend, why = backends.select_backend(call, "auto")
    assert backend is None and "triton: triton lacks it" in why and "fa3: fa3 lacks it" in why


def test_auto_on_the_cpu_is_the_reference():
    assert backends.auto_order(SimpleNamespace(device=torch.device("cpu"), head_dim=128)) == ("reference",)


def test_torch_backend_activates_fa3_again_after_something_restored_the_default(monkeypatch):
    """torch's FP8 SDPA op needs FA3 active; torchao's wrapper puts torch's default back after
    each forward, so the torch backend checks before every call instead of activating once."""
    from accel.backends import torch_quantized

    state = {"impl": None, "activations": 0}

    def activate(impl):
        state["impl"], state["activations"] = impl, state["activations"] + 1

    monkeypatch.setattr(torch.nn.attention, "activate_flash_attention_impl", activate, raising=False)
    monkeypatch.setattr(torch.nn.attention, "current_flash_attention_impl", lambda: state["impl"], raising=False)
    torch_quantized._activate_fa3()
    torch_quantized._activate_fa3()
    assert state == {"impl": "FA3", "activations": 1}
    state["impl"] = None  # restore_flash_attention_impl(), e.g. by torchao
    torch_quantized._activate_fa3()
    assert state == {"impl": "FA3", "activations": 2}
