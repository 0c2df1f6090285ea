"""Training-step throughput: reasonlens's Transformer against a stock TransformerLens HookedTransformer.

One step = forward, next-token cross-entropy over every position, backward, AdamW update. All
variants get the same config, batch and data, and are timed in interleaved rounds (a, b, c, a, b,
c, ...) so machine drift hits them alike; each figure is the median step time after warm-up.

  (a) reasonlens Transformer, fp32
  (b) transformer_lens.HookedTransformer (3.x), fp32          <- baseline
  (c) reasonlens Transformer, bf16 autocast (where the CPU supports bf16)
  (d) HookedTransformer, bf16 autocast (context only)

Model FLOPs per step = 6 x (parameters other than token/position embeddings) x tokens
                       + 12 x n_layers x seq x d_model x tokens.
The fp32 matmul peak is a square fp32 matmul measured in the same run.

The last printed line is one JSON object with the figures.

The baseline needs TransformerLens 3.x. On 4.x (no HookedTransformer) the script says so in one
line and exits with status 0, its JSON line saying the baseline is unavailable: 4.x's replacement,
a native TransformerBridge, is another model (flattened nn.Linear weights, a bridge layer around
every component), so figures against it would not be comparable with the recorded speedups.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings

from reasonlens import cli

torch = F = ModelConfig = Transformer = None  # imported by _import_heavy() once the arguments parse


def _import_heavy() -> None:
    """torch and the model, imported after the arguments parse so that ``--help`` is instant."""
    global torch, F, ModelConfig, Transformer
    import torch
    import torch.nn.functional as F

    from reasonlens.models import ModelConfig, Transformer


def matmul_peak(n: int = 2048, dtype: torch.dtype | None = None, reps: int = 10) -> float:
    dtype = dtype or torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def model_flops(cfg: ModelConfig, model: torch.nn.Module, tokens: int) -> float:
    params = sum(p.numel() for n, p in model.named_parameters() if n not in ("embed.W_E", "pos_embed.W_pos"))
    return 6 * params * tokens + 12 * cfg.n_layers * cfg.n_ctx * cfg.d_model * tokens


def bf16_supported() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.ones(8, 8) @ torch.ones(8, 8)
        return True
    except RuntimeError:
        return False


class Stepper:
    """A model, its optimizer and one timed training step."""

    def __init__(self, model: torch.nn.Module, bf16: bool, data: torch.Tensor, vocab: int):
        self.model, self.bf16, self.data, self.vocab = model, bf16, data, vocab
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    def step(self) -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(self.data[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, self.vocab), self.data[:, 1:].reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    cli.prepare(p)
    p.add_argument("--layers", type=cli.positive_int, default=4)
    p.add_argument("--d-model", type=cli.positive_int, default=256)
    p.add_argument("--heads", type=cli.positive_int, default=4)
    p.add_argument("--d-mlp", type=cli.positive_int, default=1024)
    p.add_argument("--vocab", type=cli.positive_int, default=200)
    p.add_argument("--seq", type=cli.positive_int, default=32)
    p.add_argument("--batch", type=cli.positive_int, default=512)
    p.add_argument("--act-fn", default="relu", choices=["relu", "gelu", "gelu_new"])
    p.add_argument("--warmup", type=cli.nonneg_int, default=2, help="untimed steps per variant")
    p.add_argument(
        "--rounds", type=cli.positive_int, default=5, help="timed rounds (one step per variant each)"
    )
    p.add_argument(
        "--threads", type=cli.positive_int, default=None, help="torch threads (default: torch's choice)"
    )
    args = p.parse_args(argv)
    _import_heavy()
    if args.threads:
        torch.set_num_threads(args.threads)

    from reasonlens.models.tl_compat import hooked_transformer_available, transformerlens_version

    if not hooked_transformer_available():
        version = transformerlens_version()
        print(
            f"baseline unavailable: transformer_lens.HookedTransformer needs TransformerLens 3.x, "
            f"transformer-lens {version} is installed (install with -c constraints.txt); nothing measured"
        )
        print(json.dumps({"baseline": "unavailable", "transformer_lens": version}))
        return 0

    from transformer_lens import HookedTransformer  # TransformerLens 3.x only

    cfg = ModelConfig(
        n_layers=args.layers,
        d_model=args.d_model,
        n_heads=args.heads,
        d_mlp=args.d_mlp,
        d_vocab=args.vocab,
        n_ctx=args.seq,
        norm="pre",
        act_fn=args.act_fn,
    )
    torch.manual_seed(0)
    data = torch.randint(0, args.vocab, (args.batch, args.seq + 1))
    ours = Transformer(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tl_cfg = ours.to_hooked_transformer().cfg

    def fresh_tl() -> HookedTransformer:  # stock model, default init
        with warnings.catch_warnings():  # 3.9 announces its own removal in 4.0
            warnings.simplefilter("ignore", DeprecationWarning)
            return HookedTransformer(tl_cfg)

    bf16 = bf16_supported()
    variants = {
        "ours_fp32": Stepper(ours, False, data, args.vocab),
        "tl_fp32": Stepper(fresh_tl(), False, data, args.vocab),
    }
    if bf16:
        variants["ours_bf16"] = Stepper(Transformer(cfg), True, data, args.vocab)
        variants["tl_bf16"] = Stepper(fresh_tl(), True, data, args.vocab)
    for s in variants.values():
        for _ in range(args.warmup):
            s.step()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for k, s in variants.items():
            times[k].append(s.step())
    peak = matmul_peak()
    flops = model_flops(cfg, ours, args.batch * args.seq)

    sec = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, bf16 autocast {'yes' if bf16 else 'no'}"
    )
    print(
        f"config: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, d_mlp {args.d_mlp}, "
        f"vocab {args.vocab}, seq {args.seq}, batch {args.batch}, act {args.act_fn}, pre-LN"
    )
    print(
        f"model FLOPs per step: {flops / 1e9:.1f} GFLOP; fp32 matmul peak (2048^3): {peak / 1e9:.0f} GFLOP/s"
    )
    print(f"{'variant':<12}{'s/step':>9}{'GFLOP/s':>10}{'vs tl_fp32':>12}{'of peak':>9}")
    for k, s in sec.items():
        print(f"{k:<12}{s:>9.3f}{flops / s / 1e9:>10.0f}{sec['tl_fp32'] / s:>11.2f}x{flops / s / peak:>9.0%}")
    out = {
        "speedup_fp32": sec["tl_fp32"] / sec["ours_fp32"],
        "speedup_bf16": sec["tl_fp32"] / sec["ours_bf16"] if bf16 else None,
        "peak_fraction_fp32": flops / sec["ours_fp32"] / peak,
        "seconds_per_step": sec,
        "model_gflop_per_step": flops / 1e9,
        "matmul_peak_fp32_gflops": peak / 1e9,
        "threads": torch.get_num_threads(),
        "act_fn": args.act_fn,
        "targets_met": {
            "speedup_fp32>=1.5": sec["tl_fp32"] / sec["ours_fp32"] >= 1.5,
            "peak_fraction_fp32>=0.7": flops / sec["ours_fp32"] / peak >= 0.7,
            "speedup_bf16>=2.5": bool(bf16 and sec["tl_fp32"] / sec["ours_bf16"] >= 2.5),
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(cli.run(main))
