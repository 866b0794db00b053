"""The denoiser a model config describes (weights freshly initialised)."""

from __future__ import annotations

from .config import ModelConfig
from .egnn import Denoiser


def build_denoiser(cfg: ModelConfig) -> Denoiser:
    return Denoiser(cfg.num_features, len(cfg.context), cfg.hidden, cfg.layers,
                    attention=cfg.attention, tanh=cfg.tanh, coords_range=cfg.coords_range,
                    norm_constant=cfg.norm_constant, normalization_factor=cfg.normalization_factor)
