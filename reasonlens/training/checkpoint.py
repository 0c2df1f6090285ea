"""Resumable training state in one safetensors file: module weights, optimizer moments, RNG
state, and a JSON header (step, configs). Loading never unpickles anything."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reasonlens.checkpoints import CheckpointError, atomic_save_safetensors, read_header, read_safetensors
from reasonlens.models.transformer import load_checked

STATE_FORMAT = "reasonlens.train_state"


def save_state(
    path: str | os.PathLike,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
) -> Path:
    """Write ``module``'s state dict, ``optimizer``'s state and torch's RNG state, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    for k, v in module.state_dict().items():
        tensors[f"model.{k}"] = v.detach().to("cpu").contiguous()
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, value in st.items():
            if not torch.is_tensor(value):
                value = torch.tensor(value)
            tensors[f"optim.{idx}.{key}"] = value.detach().to("cpu").contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    header = {
        "format": STATE_FORMAT,
        "info": json.dumps(info, sort_keys=True),
        "param_groups": json.dumps(opt["param_groups"]),
    }
    path = Path(path)
    atomic_save_safetensors(tensors, path, header)
    return path


def load_state(
    path: str | os.PathLike, module: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore what :func:`save_state` wrote into ``module`` and ``optimizer``; return its info."""
    tensors, header = read_safetensors(path)
    if header.get("format") != STATE_FORMAT:
        raise CheckpointError(path, f"not a reasonlens training state (format={header.get('format')!r})")
    model_sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    device = next(module.parameters()).device
    load_checked(module, model_sd, path)
    groups = json.loads(header["param_groups"])
    # AdamW keeps "step" on the CPU unless fused or capturable; the moments follow the params.
    step_on_device = any(g.get("fused") or g.get("capturable") for g in groups)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            on_device = key != "step" or step_on_device
            state.setdefault(int(idx), {})[key] = v.to(device) if on_device else v
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(64) if f"rng.cuda.{i}" in tensors]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return json.loads(header["info"])


def read_state_info(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return json.loads(read_header(path).get("info", "{}"))
    except ValueError as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(path, f"info unreadable ({err})") from err
