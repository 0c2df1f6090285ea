"""Hooked transformer models: :class:`ModelConfig` chooses the variant, :class:`Transformer` runs it."""

from reasonlens.models.config import ModelConfig
from reasonlens.models.modes import eval_mode
from reasonlens.models.transformer import Transformer, fan_in, init_scale, init_std

__all__ = ["ModelConfig", "Transformer", "eval_mode", "fan_in", "init_scale", "init_std"]
