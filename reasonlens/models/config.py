"""Model configuration: the one place where an architectural variant is chosen.

Every field is validated on construction, so a bad value fails with a message naming it before any
weights are allocated or any training starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from reasonlens.names import NOISES

FLOAT32_TINY = 1.1754943508222875e-38  # torch.finfo(torch.float32).tiny

Norm = Literal["pre", "post", "none"]
Init = Literal["normal", "uniform"]
ActFn = Literal["relu", "gelu", "gelu_new"]
Noise = Literal["none", "fixed", "learned", "identity"]

NORMS = ("pre", "post", "none")
INITS = ("normal", "uniform")
ACT_FNS = ("relu", "gelu", "gelu_new")


@dataclass
class ModelConfig:
    """Shape, normalisation placement and initialisation of a :class:`Transformer`.

    Field names follow TransformerLens's ``HookedTransformerConfig`` where the two overlap.

    Initialisation: every weight matrix is drawn i.i.d. with a scale set by its fan-in ``d_in`` and
    the rate ``gamma``:

    - ``init="normal"``: ``N(0, std^2)`` with ``std = d_in ** -gamma`` (the convention of the
      matching-mechanism papers' analyses: gamma 0.5 is the usual LeCun-like scale, larger gamma is
      smaller init);
    - ``init="uniform"``: ``U(-bound, bound)`` with ``bound = (6 / d_in) ** gamma`` (the authors'
      teaching code). Its std is ``bound / sqrt(3)``.

    ``d_in`` is the number of inputs feeding one output unit: ``d_vocab`` for the token embedding,
    ``n_ctx`` for the position embedding, ``d_model`` for W_Q/W_K/W_V/W_in/W_U, ``n_heads * d_head``
    for W_O and ``d_mlp`` for W_out. Biases start at zero, LayerNorm gains at one.
    ``embed_init_scale`` multiplies the token embedding's scale alone (default 1): a larger
    embedding at init keeps never-trained (OOD) rows nearer the norm trained rows grow to.

    Attention noise (``noise``, ``noise_alpha``, ``noise_seed``): our reading of the "orthogonal
    noise" / random-matrix reparametrisation of Wang et al. (arXiv 2405.15302, v1-v3), whose exact
    formula is not public. Every head ``h`` of every layer ``l`` computes with the effective matrices

        W_QK(l, h) = W_Q W_K^T + a_QK(l, h) Z_QK(l, h)        [d_model, d_model]
        W_OV(l, h) = W_V W_O   + a_OV(l, h) Z_OV(l, h)        [d_model, d_model]

    in TransformerLens's orientation (attention logit ``x_q W_QK x_k^T / sqrt(d_head)``, head output
    ``pattern @ (x W_OV)``), where ``x`` is what the attention reads (the LayerNormed stream for
    pre-LN, the stream itself for post-LN and no-norm). ``alpha`` lives in the space of
    ``W_Q W_K^T``, before the ``1 / sqrt(d_head)`` score scale, so the noise adds
    ``alpha / sqrt(d_head) * x_q Z x_k^T`` to the logits; on the OV side there is no scale.

    - ``"none"``: the standard model (the default; ``noise_alpha`` must stay 0);
    - ``"fixed"``: ``a = noise_alpha`` (> 0) and each ``Z`` an independent ``d_model x d_model``
      Gaussian matrix divided by its spectral norm (so ``||Z||_2 = 1``), drawn once from
      ``noise_seed`` (default: ``seed``) independently of torch's global RNG, and never trained;
    - ``"learned"``: the same ``Z``, with ``a_QK(l, h)`` and ``a_OV(l, h)`` trainable scalars
      starting at ``noise_alpha`` (>= 0): ``2 * n_layers * n_heads`` extra parameters;
    - ``"identity"``: ``Z = I`` with ``a = noise_alpha`` (> 0), the control the buffer paper
      reports failing.
    """

    n_layers: int
    d_model: int
    n_ctx: int
    d_vocab: int
    n_heads: int = 1
    d_head: int | None = None  # default: d_model // n_heads
    d_mlp: int | None = None  # default: 4 * d_model; 0 means attention-only blocks
    d_vocab_out: int | None = None  # default: d_vocab
    act_fn: ActFn = "relu"
    norm: Norm = "pre"
    attn_bias: bool = False
    mlp_bias: bool = False
    unembed_bias: bool = True
    ln_eps: float = 1e-5
    init: Init = "normal"
    gamma: float = 0.5
    seed: int = 0  # seeds the initial weights, independently of torch's global RNG
    embed_init_scale: float = 1.0  # multiplies W_E's init scale (std or bound) only
    noise: Noise = "none"  # attention reparametrisation (see the class docstring)
    noise_alpha: float = 0.0  # noise strength, in the space of W_Q W_K^T and W_V W_O
    noise_seed: int | None = None  # seeds the noise matrices Z; None: use ``seed``
    # Where the weights live. Kept up to date by Transformer when it is moved; not saved.
    device: str = field(default="cpu", compare=False)

    def __post_init__(self) -> None:
        if self.d_head is None and isinstance(self.n_heads, int) and self.n_heads > 0:
            if isinstance(self.d_model, int) and self.d_model % self.n_heads != 0:
                raise ValueError(
                    f"ModelConfig: d_head not given and d_model={self.d_model} is not divisible "
                    f"by n_heads={self.n_heads}; pass d_head explicitly"
                )
            self.d_head = self.d_model // self.n_heads
        if self.d_mlp is None and isinstance(self.d_model, int):
            self.d_mlp = 4 * self.d_model
        if self.d_vocab_out is None:
            self.d_vocab_out = self.d_vocab
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        for name in ("n_layers", "d_model", "n_ctx", "d_vocab", "n_heads", "d_head", "d_vocab_out"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer; got {value!r}")
        if isinstance(self.d_mlp, bool) or not isinstance(self.d_mlp, int) or self.d_mlp < 0:
            raise ValueError(
                f"ModelConfig.d_mlp must be a non-negative integer (0 = attention only); got {self.d_mlp!r}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"ModelConfig.norm must be one of {NORMS}; got {self.norm!r}")
        if self.init not in INITS:
            raise ValueError(f"ModelConfig.init must be one of {INITS}; got {self.init!r}")
        if self.act_fn not in ACT_FNS:
            raise ValueError(f"ModelConfig.act_fn must be one of {ACT_FNS}; got {self.act_fn!r}")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)):
            raise ValueError(f"ModelConfig.gamma must be a number; got {self.gamma!r}")
        if not math.isfinite(self.gamma) or self.gamma < 0:
            raise ValueError(
                f"ModelConfig.gamma must be finite and >= 0 (0.5 usual, 1 small); got {self.gamma!r}"
            )
        e = self.embed_init_scale
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e <= 0:
            raise ValueError(f"ModelConfig.embed_init_scale must be a finite number > 0; got {e!r}")
        self._check_init_underflow()
        if not (isinstance(self.ln_eps, (int, float)) and self.ln_eps > 0):
            raise ValueError(f"ModelConfig.ln_eps must be > 0; got {self.ln_eps!r}")
        for name in ("attn_bias", "mlp_bias", "unembed_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ModelConfig.{name} must be True or False; got {getattr(self, name)!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"ModelConfig.seed must be an integer; got {self.seed!r}")
        self._validate_noise()

    def _check_init_underflow(self) -> None:
        """Refuse a ``gamma`` whose init scale underflows float32 (weights all 0: a dead model)."""
        d_in = max(self.d_vocab, self.n_ctx, self.d_model, self.n_heads * self.d_head, self.d_mlp)
        if d_in <= 1 or (self.init == "uniform" and d_in <= 6):
            return
        base = d_in if self.init == "normal" else d_in / 6.0
        log10_scale = -self.gamma * math.log10(base)
        if log10_scale < math.log10(FLOAT32_TINY):
            raise ValueError(
                f"ModelConfig.gamma={self.gamma!r} makes the {self.init} init scale of a weight with "
                f"fan-in {d_in} 10^{log10_scale:.0f}, below float32's smallest normal number: its "
                "weights would all be 0 (a dead model)"
            )

    def _validate_noise(self) -> None:
        if self.noise not in NOISES:
            raise ValueError(f"ModelConfig.noise must be one of {NOISES}; got {self.noise!r}")
        a = self.noise_alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a < 0:
            raise ValueError(f"ModelConfig.noise_alpha must be a finite number >= 0; got {a!r}")
        if self.noise == "none" and a != 0:
            raise ValueError(
                f"ModelConfig.noise_alpha={a!r} has no effect with noise='none'; set "
                "noise='fixed', 'learned' or 'identity', or leave noise_alpha at 0"
            )
        if self.noise in ("fixed", "identity") and a == 0:
            raise ValueError(
                f"ModelConfig.noise={self.noise!r} needs noise_alpha > 0 (0 is the plain model: use "
                "noise='none'); got noise_alpha=0"
            )
        s = self.noise_seed
        if s is not None and (isinstance(s, bool) or not isinstance(s, int)):
            raise ValueError(f"ModelConfig.noise_seed must be an integer or None; got {s!r}")

    @property
    def noise_seed_used(self) -> int:
        """The seed the noise matrices are drawn from (``noise_seed``, else ``seed``)."""
        return self.seed if self.noise_seed is None else self.noise_seed

    # -- TransformerLens compatibility: ActivationCache and the patching utilities read these. --
    @property
    def attn_only(self) -> bool:
        return self.d_mlp == 0

    @property
    def normalization_type(self) -> str | None:
        """TransformerLens's name for the norm placement ("LN" is pre-LN; post-LN has no name)."""
        return "LN" if self.norm == "pre" else None

    @property
    def n_key_value_heads(self) -> None:
        return None

    @property
    def positional_embedding_type(self) -> str:
        return "standard"

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("device")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)} - {"device"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"ModelConfig: unknown field(s) {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> ModelConfig:
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> ModelConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)
