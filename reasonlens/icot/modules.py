"""The implicit-CoT models: a mind-reading student, a thought emulator, and the two coupled.

All three wrap reasonlens :class:`~reasonlens.models.Transformer` s and act on them only through
``blocks.{l}.hook_resid_pre`` hooks, so every activation stays visible to ``run_with_cache``.

- :class:`MindReadingStudent` reads ``input SEP #### answer END``. Before each block ``l`` its state
  at the first separator is replaced by ``MLP_l(state_l)``, ``state_l`` being the teacher's diagonal
  state (while mind-reading) or the emulator's prediction of it (once coupled).
- :class:`ThoughtEmulator` reads ``input SEP``. Before each block ``l`` it predicts the teacher's
  state ``l`` from its own state at the separator and a recurrent carry,
  ``pred_l = MLP_l([z_l ; h_{l-1}])``, then feeds the prediction through an LSTM cell whose output
  ``h_l`` is written back at the separator (``h_{-1} = 0``). The authors' emulator feeds a learned
  constant in the second half of the MLP input and lets the LSTM carry act only through the
  written-back state; here the carry also reaches the next prediction directly.
- :class:`ImplicitCoT` chains them: the emulator's predictions feed the student.

Each saves to one safetensors file (weights, plus configs as JSON in the header) and loads without
unpickling.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from reasonlens.checkpoints import CheckpointError, atomic_save_safetensors, read_safetensors
from reasonlens.icot.states import resid_pre_name, substitution_hooks
from reasonlens.models import ModelConfig, Transformer
from reasonlens.models.transformer import load_checked

FORMAT_PREFIX = "reasonlens.icot."


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out))


def _init_linear_layers(module: nn.Module, seed: int) -> None:
    """Deterministic init of the added MLP/LSTM weights, independent of torch's global RNG."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim >= 2:
                bound = 1.0 / (p.shape[1] ** 0.5)
                p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))
            else:
                p.zero_()


def _check_layers(kind: str, cfg: ModelConfig, teacher_layers: int) -> None:
    if cfg.n_layers != teacher_layers:
        raise ValueError(
            f"{kind}: n_layers={cfg.n_layers} must equal the teacher's n_layers={teacher_layers} "
            "(one teacher state per block)"
        )


def _save(module: nn.Module, path: str | os.PathLike, kind: str, spec: dict, metadata: dict | None) -> Path:
    header = {
        "format": FORMAT_PREFIX + kind,
        "spec": json.dumps(spec, sort_keys=True),
        "metadata": json.dumps(metadata or {}, sort_keys=True),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    path = Path(path)
    atomic_save_safetensors(tensors, path, header)
    return path


def _read(path: str | os.PathLike, kind: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors, header = read_safetensors(path)
    if header.get("format") != FORMAT_PREFIX + kind:
        raise CheckpointError(path, f"is not a saved {kind} (format={header.get('format')!r})")
    try:
        return tensors, json.loads(header["spec"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(path, f"config unreadable ({type(err).__name__}: {err})") from err


def _build(path: str | os.PathLike, make: Any) -> Any:
    try:
        return make()
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(path, f"config unreadable ({type(err).__name__}: {err})") from err


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``metadata`` stored with a saved student, emulator or coupled model."""
    _, header = read_safetensors(path)
    return json.loads(header.get("metadata", "{}"))


class MindReadingStudent(nn.Module):
    """A transformer whose state at the first separator is overwritten before every block."""

    def __init__(
        self, cfg: ModelConfig, teacher_d_model: int | None = None, teacher_layers: int | None = None
    ):
        super().__init__()
        self.teacher_d_model = teacher_d_model or cfg.d_model
        _check_layers("MindReadingStudent", cfg, teacher_layers or cfg.n_layers)
        self.model = Transformer(cfg)
        D = cfg.d_model
        self.mlps = nn.ModuleList([_mlp(self.teacher_d_model, 4 * D, D) for _ in range(cfg.n_layers)])
        _init_linear_layers(self.mlps, cfg.seed + 1)

    @property
    def cfg(self) -> ModelConfig:
        return self.model.cfg

    def project(
        self, states: Float[Tensor, "batch n_layers d_teacher"]
    ) -> Float[Tensor, "batch n_layers d_model"]:
        """``MLP_l(state_l)`` for every layer: what gets written at the separator."""
        if states.shape[1] != len(self.mlps) or states.shape[2] != self.teacher_d_model:
            raise ValueError(
                f"states must be [batch, {len(self.mlps)}, {self.teacher_d_model}]; got {tuple(states.shape)}"
            )
        return torch.stack([mlp(states[:, layer]) for layer, mlp in enumerate(self.mlps)], 1)

    def hooks(self, states: Float[Tensor, "batch n_layers d_teacher"], sep: Int[Tensor, " batch"]) -> list:
        """The substitution hooks for these states (for ``run_with_hooks`` / ``hooks()``)."""
        return substitution_hooks(self.project(states), sep)

    def forward(
        self,
        tokens: Int[Tensor, "batch pos"],
        states: Float[Tensor, "batch n_layers d_teacher"],
        sep: Int[Tensor, " batch"],
    ) -> Float[Tensor, "batch pos d_vocab"]:
        return self.model.run_with_hooks(tokens, fwd_hooks=self.hooks(states, sep))

    def spec(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "teacher_d_model": self.teacher_d_model}

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> Path:
        return _save(self, path, "student", self.spec(), metadata)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> MindReadingStudent:
        return cls(ModelConfig.from_dict(spec["config"]), spec["teacher_d_model"])

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> MindReadingStudent:
        tensors, spec = _read(path, "student")
        module = _build(path, lambda: cls.from_spec(spec))
        load_checked(module, tensors, path)
        return module.to(device) if device is not None else module

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ThoughtEmulator(nn.Module):
    """Predicts the teacher's diagonal states from the input alone, one per block."""

    def __init__(
        self, cfg: ModelConfig, teacher_d_model: int | None = None, teacher_layers: int | None = None
    ):
        super().__init__()
        self.teacher_d_model = teacher_d_model or cfg.d_model
        _check_layers("ThoughtEmulator", cfg, teacher_layers or cfg.n_layers)
        self.model = Transformer(cfg)
        D, Dt = cfg.d_model, self.teacher_d_model
        self.mlps = nn.ModuleList([_mlp(2 * D, 4 * D, Dt) for _ in range(cfg.n_layers)])
        self.rnn = nn.LSTMCell(Dt, D)
        _init_linear_layers(self.mlps, cfg.seed + 2)
        _init_linear_layers(self.rnn, cfg.seed + 3)
        with torch.no_grad():  # regression heads start at zero, as do the first predictions
            for mlp in self.mlps:
                mlp[-1].weight.zero_()

    @property
    def cfg(self) -> ModelConfig:
        return self.model.cfg

    def forward(
        self, tokens: Int[Tensor, "batch pos"], sep: Int[Tensor, " batch"]
    ) -> Float[Tensor, "batch n_layers d_teacher"]:
        """Predicted teacher states. Only the prefix up to ``max(sep)`` is read."""
        preds, _ = self.run(tokens, sep)
        return preds

    def run(
        self, tokens: Int[Tensor, "batch pos"], sep: Int[Tensor, " batch"], cache: bool = False
    ) -> tuple[Float[Tensor, "batch n_layers d_teacher"], dict[str, Tensor]]:
        """Predictions, and with ``cache=True`` the emulator's own residual stream at the separator
        entering each block *before* the write (``z_l``, key ``"z"``) and what was written
        (``h_l``, key ``"written"``), both ``[batch, n_layers, d_model]``."""
        tokens = tokens[:, : int(sep.max()) + 1]
        B = tokens.shape[0]
        device = self.model.W_E.device
        sep = sep.to(device)
        rows = torch.arange(B, device=device)
        D = self.cfg.d_model
        carry: dict[str, Any] = {"h": torch.zeros(B, D, device=device), "c": torch.zeros(B, D, device=device)}
        preds: list[Tensor] = []
        zs: list[Tensor] = []
        written: list[Tensor] = []

        def step(layer: int):  # noqa: ANN202
            def hook(resid: Tensor, hook: object) -> Tensor:
                z = resid[rows, sep]
                pred = self.mlps[layer](torch.cat([z, carry["h"].to(z.dtype)], -1))
                h, c = self.rnn(pred.float(), (carry["h"], carry["c"]))
                carry["h"], carry["c"] = h, c
                preds.append(pred)
                if cache:
                    zs.append(z.detach())
                    written.append(h.detach())
                return resid.index_put((rows, sep), h.to(resid.dtype))

            return hook

        hooks = [(resid_pre_name(layer), step(layer)) for layer in range(self.cfg.n_layers)]
        self.model.run_with_hooks(tokens, stop_at_layer=self.cfg.n_layers, fwd_hooks=hooks)
        extra = {"z": torch.stack(zs, 1), "written": torch.stack(written, 1)} if cache else {}
        return torch.stack(preds, 1).float(), extra

    def spec(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "teacher_d_model": self.teacher_d_model}

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> Path:
        return _save(self, path, "emulator", self.spec(), metadata)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ThoughtEmulator:
        return cls(ModelConfig.from_dict(spec["config"]), spec["teacher_d_model"])

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> ThoughtEmulator:
        tensors, spec = _read(path, "emulator")
        module = _build(path, lambda: cls.from_spec(spec))
        load_checked(module, tensors, path)
        return module.to(device) if device is not None else module

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ImplicitCoT(nn.Module):
    """Emulator feeding student: answers from ``input SEP`` with no chain of thought and no teacher."""

    def __init__(self, emulator: ThoughtEmulator, student: MindReadingStudent):
        super().__init__()
        if (
            emulator.teacher_d_model != student.teacher_d_model
            or emulator.cfg.n_layers != student.cfg.n_layers
        ):
            raise ValueError(
                "ImplicitCoT: the emulator predicts "
                f"[{emulator.cfg.n_layers}, {emulator.teacher_d_model}] states but the student reads "
                f"[{student.cfg.n_layers}, {student.teacher_d_model}]"
            )
        self.emulator = emulator
        self.student = student

    def forward(
        self, tokens: Int[Tensor, "batch pos"], sep: Int[Tensor, " batch"]
    ) -> Float[Tensor, "batch pos d_vocab"]:
        return self.student(tokens, self.emulator(tokens, sep), sep)

    def spec(self) -> dict[str, Any]:
        return {"emulator": self.emulator.spec(), "student": self.student.spec()}

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> Path:
        return _save(self, path, "coupled", self.spec(), metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> ImplicitCoT:
        tensors, spec = _read(path, "coupled")
        module = _build(
            path,
            lambda: cls(
                ThoughtEmulator.from_spec(spec["emulator"]), MindReadingStudent.from_spec(spec["student"])
            ),
        )
        load_checked(module, tensors, path)
        return module.to(device) if device is not None else module

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
