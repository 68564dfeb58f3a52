"""Triton kernels for FP8 attention and their torch custom-op wrappers.

Nothing here knows about diffusers. Import as ``accel.kernels``; the public entry point is
``accel.fp8_sdpa``. The ops (``torch.ops.accel.*``) are registered on first import of
``accel.kernels.ops`` and only that module needs Triton.
"""


def _give_way_to_hugging_face_kernels() -> bool:
    """Found as the top-level package ``kernels``, this folder is on sys.path through the
    repository root (``python -m ...`` or ``python -c`` run in a checkout). That name belongs to
    Hugging Face's ``kernels``, which transformers and diffusers import when it is installed:
    load it in our place (a module may replace itself in sys.modules while it is imported).
    Returns whether it did."""
    import importlib.machinery
    import importlib.util
    import os
    import sys

    root = os.path.realpath(os.path.join(os.path.dirname(__file__), os.pardir))
    elsewhere = [p for p in sys.path if os.path.realpath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec("kernels", elsewhere)
    if spec is None:
        return False
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module
    spec.loader.exec_module(module)
    return True


if __name__ != "kernels" or not _give_way_to_hugging_face_kernels():
    from .numerics import AMAX_EPS, E4M3_MAX, P_SCALE, descale_from_amax, scale_from_amax

__all__ = ["AMAX_EPS", "E4M3_MAX", "P_SCALE", "descale_from_amax", "scale_from_amax"]
