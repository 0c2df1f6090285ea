"""Attribution patching against exact activation patching: speed and agreement, in one run.

The sweep: every block's five sites (resid_pre, attn_out, resid_mid, mlp_out, resid_post) x every
position, on the matching task's child counterfactual (Type 1, 13 positions), denoising. By default
the model has the shape of experiments/matching_init.py's cpu preset (3 layers, 1 head, d_model 128,
d_head 128, d_mlp 512, post-LN): 3 x 5 x 13 = 195 patched sites. A fresh model unless
--checkpoint names a trained one (the speed does not depend on the weights; the agreement does).

- exact: ``reasonlens.analysis.activation_patching(..., sites=SITES)``, one forward pass per
  (site, position) after caching the two runs;
- attribution: ``reasonlens.analysis.attribution.attribution_patching``, the same sites and
  positions from the two cached runs plus one forward and one backward pass.

Each is timed --repeats times; the fastest run counts. Threads are whatever the environment sets
(e.g. OMP_NUM_THREADS). The last line printed is one JSON object: ``speedup`` = exact time /
attribution time, and the agreement of the two tables (``sign_agreement`` among the sites where the
exact effect moves, ``spearman`` over all sites).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from reasonlens import cli

NORMS = ("pre", "post", "none")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.prepare(p)
    p.add_argument("--examples", type=cli.positive_int, default=500, help="examples patched (default 500)")
    p.add_argument("--repeats", type=cli.positive_int, default=3, help="timed runs of each (fastest kept)")
    p.add_argument("--norm", choices=NORMS, default="post", help="norm placement of the fresh model")
    p.add_argument("--checkpoint", type=Path, help="a trained model file (default: a fresh model)")
    p.add_argument("--seed", type=cli.seed, default=0, help="seeds the model and the data")
    p.add_argument("--quick", action="store_true", help="a tiny model, 20 examples, one repeat: seconds")
    args = p.parse_args(argv)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        p.error(f"--checkpoint: no model file at {args.checkpoint}")
    if args.examples < 10:
        p.error(f"--examples must be at least 10; got {args.examples}")
    return args


def timed(fn):  # noqa: ANN001, ANN201 - any callable, its result
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from reasonlens.analysis import activation_patching, matching_counterfactual
    from reasonlens.analysis.attribution import agreement, attribution_patching
    from reasonlens.analysis.patching import SITES
    from reasonlens.models import ModelConfig, Transformer
    from reasonlens.tasks import matching

    n, repeats = (20, 1) if args.quick else (args.examples, args.repeats)
    if args.checkpoint is not None:
        model = Transformer.load(args.checkpoint)
        shape = str(args.checkpoint)
    else:
        width = (
            dict(d_model=16, d_head=16, d_mlp=32) if args.quick else dict(d_model=128, d_head=128, d_mlp=512)
        )
        cfg = ModelConfig(
            n_layers=3, n_heads=1, **width, n_ctx=13, d_vocab=matching.vocab_size("single_chain", 13),
            norm=args.norm, init="normal", seed=args.seed,
        )  # fmt: skip
        model = Transformer(cfg)
        shape = f"fresh 3 layers, d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, {args.norm}-LN"
    model.eval()
    data = matching.generate(n, "test", steps=2, seq_len=13, seed=(args.seed, 1))
    corrupt, answers = matching_counterfactual(data, "child", seed=args.seed)
    call = (model, data.inputs, corrupt, data.answers, answers)
    print(f"attribution patching benchmark: {n} examples, model: {shape}, threads {torch.get_num_threads()}")
    exact_times, approx_times = [], []
    for _ in range(repeats):
        t, exact = timed(lambda: activation_patching(*call, sites=SITES))
        exact_times.append(t)
        t, approx = timed(lambda: attribution_patching(*call, sites=SITES))
        approx_times.append(t)
    exact_s, approx_s = min(exact_times), min(approx_times)
    span = exact.clean_logit_diff - exact.corrupt_logit_diff
    merged = approx.merge(
        exact.assign(exact_effect=exact.score * span)[["hook", "position", "exact_effect"]],
        on=["hook", "position"],
    )
    agree = agreement(merged.effect, merged.exact_effect)
    print(f"exact       {exact_s:8.3f} s ({len(exact)} sites x positions, one forward pass each)")
    print(f"attribution {approx_s:8.3f} s (one forward and one backward pass)")
    print(f"agreement: sign {agree['sign_agreement']:.3f}, Spearman {agree['spearman']:.3f}")
    report = {
        "speedup": round(exact_s / approx_s, 2),
        "exact_s": round(exact_s, 4),
        "attribution_s": round(approx_s, 4),
        "sign_agreement": round(agree["sign_agreement"], 4),
        "spearman": round(agree["spearman"], 4),
        "spearman_moved": round(agree["spearman_moved"], 4),
        "n_sites": len(exact),
        "n_layers": model.cfg.n_layers,
        "n_positions": data.inputs.shape[1],
        "sites_per_layer": len(SITES),
        "examples": n,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "model": shape,
        "quick": args.quick,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    parse_args()  # --help and bad arguments are answered here, before torch is imported
    sys.exit(cli.run(main))
