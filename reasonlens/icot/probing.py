"""Probe tables for the implicit-CoT experiments, on the shared probe toolkit.

The states probed here are already in hand (one ``[n, d]`` matrix per source and layer), so this
module only adapts them to :func:`reasonlens.probes.probe_features`: per-layer targets are sliced
to the layer being probed, targets with a single class in the data are left out (nothing to
decode), and the rows are relabelled by ``source`` and ``layer``. Probes, controls and the
example-level split are the toolkit's (see :mod:`reasonlens.probes.linear`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int

from reasonlens.probes import probe_features

COLUMNS = [
    "source", "layer", "target", "metric", "score", "control_score", "selectivity", "n_train", "n_test",
    "chance",
]  # fmt: skip


def _as_numpy(x: object) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def probe_table(
    features: Mapping[tuple[str, int], Float[np.ndarray, "n d"] | Float[torch.Tensor, "n d"]],
    targets: Mapping[str, Int[np.ndarray, "..."] | Int[torch.Tensor, "..."]],
    test_fraction: float = 0.3,
    seed: int = 0,
    solver: str = "sklearn",
    max_iter: int = 300,
) -> pd.DataFrame:
    """Probe every ``(source, layer)`` feature set for every target; one row per probe.

    A target is ``[n]`` (the same labels at every layer) or ``[n, n_layers]`` (column ``l`` for
    layer ``l``). ``solver`` is the toolkit's: "sklearn" (multinomial logistic regression) or
    "closed_form" (linear discriminant analysis, much faster). The same example split serves every
    probe, so scores compare across sources and layers.
    """
    if not features:
        raise ValueError("no features to probe")
    n = len(next(iter(features.values())))
    targets = {name: _as_numpy(y) for name, y in targets.items()}
    for name, y in targets.items():
        if y.ndim not in (1, 2) or y.shape[0] != n:
            raise ValueError(f"target {name!r} must be [n] or [n, n_layers] with n={n}; got shape {y.shape}")
    for key, x in features.items():  # every input checked before the first fit
        if len(x) != n:
            raise ValueError(f"features for {key} have {len(x)} examples; expected {n}")
    tables = []
    for (source, layer), x in features.items():
        at_layer = {}
        for name, y in targets.items():
            if y.ndim == 2 and layer >= y.shape[1]:
                continue  # a per-layer target defined for fewer layers than this source has
            labels = y[:, layer] if y.ndim == 2 else y
            if len(np.unique(labels)) > 1:
                at_layer[name] = labels.astype(np.int64)
        if not at_layer:
            continue
        table = probe_features(
            _as_numpy(x).astype(np.float32), at_layer, solver=solver, test_frac=test_fraction, seed=seed,
            max_iter=max_iter,
        )  # fmt: skip
        tables.append(table.assign(source=source, layer=layer))
    if not tables:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(tables, ignore_index=True)[COLUMNS]
