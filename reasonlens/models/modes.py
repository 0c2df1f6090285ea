"""Evaluation mode for the length of a block, restored afterwards.

TransformerLens 4's analysis utilities (``transformer_lens.patching`` and the tools under
``transformer_lens.tools.analysis``) refuse a model with any submodule in training mode; 3.x ran
them either way. Every reasonlens analysis that hands a model to them wraps the call in
:func:`eval_mode`, so user code behaves alike on both lines and a model being trained comes back
in the mode it had.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` and every submodule in evaluation mode; on exit (also on an error) give each
    module back the mode it had, submodule by submodule (a model that was half in ``eval()``
    stays so)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"eval_mode needs a torch.nn.Module; got {type(model).__name__}")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
