"""The denoiser a model config describes (weights freshly initialised)."""

from __future__ import annotations

import torch

from .config import ModelConfig
from .egnn import Denoiser


def build_denoiser(cfg: ModelConfig) -> Denoiser:
    return Denoiser(cfg.num_features, len(cfg.context), cfg.hidden, cfg.layers,
                    self_condition=cfg.self_condition, rbf=cfg.rbf, attention=cfg.attention,
                    tanh=cfg.tanh, coords_range=cfg.coords_range,
                    norm_constant=cfg.norm_constant, normalization_factor=cfg.normalization_factor)


def compile_for_training(model: torch.nn.Module) -> None:
    """torch.compile the network in place (its state_dict keys stay as they are), with shapes
    dynamic: every batch has other atom and edge counts, and one graph serves them all.
    Inductor's in-place buffer reuse is off: with dynamic shapes it generated a kernel that read a
    buffer it never allocated (torch 2.13, the EGNN's coordinate update)."""
    import torch._inductor.config as inductor_config

    inductor_config.inplace_buffers = False
    model.compile(dynamic=True)
