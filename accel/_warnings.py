"""One-time warnings: a fallback that happens on every attention call should say so once."""

from __future__ import annotations

import warnings

import torch

_seen: set[str] = set()


class AccelFallbackWarning(UserWarning):
    """An FP8 path could not serve a call and bf16 ran instead."""


@torch.compiler.disable
def warn_once(message: str, category: type[Warning] = AccelFallbackWarning) -> None:
    """Emit ``message`` the first time it is seen in this process."""
    if message in _seen:
        return
    _seen.add(message)
    warnings.warn(message, category, stacklevel=4)
