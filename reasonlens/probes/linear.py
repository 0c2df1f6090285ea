"""Linear probes over an :class:`ActivationStore`, many at once.

Two solvers fit the same probes (same split, same standardisation, same control labels):

``"closed_form"`` (the default, fast, memory flat in the number of examples)
    For each hook, one streaming pass over the training examples accumulates, per position, the
    sufficient statistics of linear models on standardised features: the count, the feature sum,
    the Gram matrix ``X^T X`` and, per target, ``X^T Y`` (for a categorical target that is one
    feature sum per class, gathered with ``index_add``, never a one-hot matmul). Standardising is
    folded in algebraically (``Z^T Z = D^-1 (X^T X - n mu mu^T) D^-1``). A second pass scores the
    test examples.

    Categorical targets are fitted by linear discriminant analysis: class means and a shared
    within-class covariance ``(Z^T Z - sum_c n_c m_c m_c^T + alpha I) / n`` of the standardised
    features, empirical class priors. Its posterior is exactly a multinomial logistic model,
    ``softmax(x W + b)``, with the parameters estimated in closed form (generatively) instead of by
    maximising the conditional likelihood; as ``alpha -> 0`` its predictions are those of
    scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr")``. It finds the same information as
    logistic regression (see the benchmark's agreement figures) and, unlike a least-squares
    classifier, does not lose classes when there are more classes than feature dimensions.
    Continuous targets are ridge regressions (intercept not penalised), scored by R^2: exactly
    scikit-learn's ``StandardScaler`` + ``Ridge(alpha)``; one Cholesky factor per (position,
    validity mask) serves all of them.
``"sklearn"`` (the reference)
    One scikit-learn fit per probe: ``StandardScaler`` then multinomial ``LogisticRegression``
    (``C = 1 / (2 alpha)``, the scaling scikit-learn documents between the two penalties) for
    categorical targets, ``Ridge(alpha)`` for continuous ones. Each probe loads its ``[n, d]``
    features, so memory grows with the number of examples.

Every probe is paired with a control: the same probe on the target's labels shuffled across the
examples that have one (a fresh permutation per position, seeded), which scores at chance level
plus whatever the probe can overfit. ``selectivity = score - control_score``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from reasonlens.probes.collect import hook_layer
from reasonlens.probes.store import ActivationStore

SOLVERS = ("closed_form", "sklearn")
COLUMNS = [
    "hook", "layer", "position", "target", "metric", "score", "control_score", "selectivity",
    "n_train", "n_test", "chance",
]  # fmt: skip


@dataclass
class LabelSet:
    """One probe target (or its control) at every stored position."""

    target: str
    control: bool
    values: np.ndarray  # [n, P]: compact class ids (-1 = no label) or floats (nan = no label)
    categorical: bool
    n_classes: int  # categorical: number of distinct labels; continuous: 1
    group: int  # index into the validity masks


def check_probe_settings(solver: str, alpha: float, test_frac: float, chunk_size: int, n: int) -> None:
    """A ValueError naming the first bad probe setting."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}; got {solver!r}")
    if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and alpha > 0 and np.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number > 0; got {alpha!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    split_examples(n, test_frac)  # checks test_frac against n


def split_examples(n: int, test_frac: float = 0.2, seed: int = 0) -> Bool[np.ndarray, " n"]:
    """A seeded example-level split: True for the ``round(test_frac * n)`` test examples."""
    if not (isinstance(test_frac, (int, float)) and 0 < test_frac < 1):
        raise ValueError(f"test_frac must be a number in (0, 1); got {test_frac!r}")
    n_test = int(round(test_frac * n))
    if n_test < 1 or n - n_test < 2:
        raise ValueError(f"test_frac={test_frac} leaves no test or fewer than 2 train examples of n={n}")
    is_test = np.zeros(n, dtype=bool)
    is_test[np.random.default_rng([seed, 1]).permutation(n)[:n_test]] = True
    return is_test


def as_label_array(name: str, values: object, n: int, positions: Sequence[int]) -> np.ndarray:
    """A target as ``[n, len(positions)]`` (a per-example target is repeated at every position)."""
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise ValueError(
            f"target {name!r} must have shape [n] or [n, seq_len] with n={n}; got {tuple(arr.shape)}"
        )
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"target {name!r} must be integer (categorical) or float (continuous); got {arr.dtype}"
        )
    if arr.ndim == 1:
        return np.repeat(arr[:, None], len(positions), axis=1)
    if max(positions) >= arr.shape[1]:
        raise ValueError(
            f"target {name!r} has {arr.shape[1]} positions but position {max(positions)} is probed"
        )
    return arr[:, positions]


def make_label_sets(
    targets: Mapping[str, object], n: int, positions: Sequence[int], seed: int = 0
) -> tuple[list[LabelSet], np.ndarray]:
    """Each target and its shuffled control as :class:`LabelSet`s, plus the distinct validity masks
    ``[n_groups, n, P]`` they index (targets missing at the same places share one)."""
    if not targets:
        raise ValueError("targets: no targets given")
    sets: list[LabelSet] = []
    masks: list[np.ndarray] = []
    keys: dict[bytes, int] = {}
    rng = np.random.default_rng([seed, 2])
    for name, raw in targets.items():
        arr = as_label_array(name, raw, n, positions)
        categorical = arr.dtype.kind in "biu"
        if categorical:
            valid = arr >= 0
            classes, inverse = np.unique(arr[valid], return_inverse=True)
            values = np.full(arr.shape, -1, dtype=np.int64)
            values[valid] = inverse
            n_classes = max(len(classes), 1)
        else:
            values = arr.astype(np.float64)
            valid = np.isfinite(values)
            n_classes = 1
        key = np.packbits(valid).tobytes()
        if key not in keys:
            keys[key] = len(masks)
            masks.append(valid)
        group = keys[key]
        control = values.copy()
        for j in range(values.shape[1]):
            rows = np.flatnonzero(valid[:, j])
            control[rows, j] = values[rng.permutation(rows), j]
        sets.append(LabelSet(name, False, values, categorical, n_classes, group))
        sets.append(LabelSet(name, True, control, categorical, n_classes, group))
    return sets, np.stack(masks)


class ClosedFormBank:
    """Closed-form probes (LDA for categorical, ridge for continuous targets) for every label set
    at every position of one hook, fitted from streamed sufficient statistics (module docstring).
    Feed :meth:`add_train` every chunk, call :meth:`solve`, feed :meth:`add_test` every chunk, then
    read :meth:`scores`. Everything is float64 except the class scores of categorical probes on
    test examples (float32)."""

    def __init__(
        self,
        label_sets: list[LabelSet],
        masks: Bool[np.ndarray, "groups n P"],
        is_test: Bool[np.ndarray, " n"],
        d: int,
        alpha: float = 1.0,
    ):
        self.sets, self.alpha = label_sets, float(alpha)
        self.masks = torch.from_numpy(masks)
        self.is_test = torch.from_numpy(is_test)
        G, _, P = masks.shape
        f64 = dict(dtype=torch.float64)
        self.P, self.d = P, d
        # Statistics of all training rows ([P, ...]), and of the rows each validity mask leaves
        # out ([G, P, ...]); a group's statistics are the difference, so the common case (few or
        # no missing labels) costs one Gram matrix per position, not one per group.
        self.count = torch.zeros(P, **f64)
        self.sum = torch.zeros(P, d, **f64)
        self.gram = torch.zeros(P, d, d, **f64)
        self.ex_count = torch.zeros(G, P, **f64)
        self.ex_sum = torch.zeros(G, P, d, **f64)
        self.ex_gram = torch.zeros(G, P, d, d, **f64)
        # X^T Y and 1^T Y per label set: [P, C, d] and [P, C] (continuous: C = 1)
        self.xty = [torch.zeros(P, s.n_classes, d, **f64) for s in label_sets]
        self.ty = [torch.zeros(P, s.n_classes, **f64) for s in label_sets]
        self.values = [torch.from_numpy(s.values) for s in label_sets]
        self.W: list[Tensor] = []  # per label set [P, d, C] on raw features (float32, for scoring)
        self.b: list[Tensor] = []  # per label set [P, 1, C]
        self.n_train = torch.zeros(G, P, **f64)
        self.test_stats = [torch.zeros(4, P, **f64) for _ in label_sets]

    def add_train(self, start: int, X: Float[Tensor, "b P d"]) -> None:
        split = ~self.is_test[start : start + X.shape[0]]
        X = X[split].double()
        masks = self.masks[:, start : start + split.shape[0]][:, split]  # [G, b_train, P]
        self.count += X.shape[0]
        self.sum += X.sum(0)
        Xp = X.transpose(0, 1)  # [P, b, d]
        self.gram += torch.bmm(Xp.transpose(1, 2), Xp)
        for g in range(masks.shape[0]):
            left_out = ~masks[g]
            for p in torch.nonzero(left_out.any(0)).flatten().tolist():
                Xe = X[left_out[:, p], p]
                self.ex_count[g, p] += Xe.shape[0]
                self.ex_sum[g, p] += Xe.sum(0)
                self.ex_gram[g, p] += Xe.T @ Xe
        pos = torch.arange(self.P).expand(X.shape[0], -1)
        gathered: dict[int, tuple[Tensor, Tensor]] = {}  # per group: (positions, features) of its rows
        for k, s in enumerate(self.sets):
            m = masks[s.group]
            y = self.values[k][start : start + split.shape[0]][split]
            if s.categorical:
                if s.group not in gathered:
                    gathered[s.group] = (pos[m], X[m])
                pos_m, X_m = gathered[s.group]
                idx = pos_m * s.n_classes + y[m]
                self.xty[k].view(-1, self.d).index_add_(0, idx, X_m)
                self.ty[k].view(-1).index_add_(0, idx, torch.ones(idx.shape[0], dtype=torch.float64))
            else:
                yv = torch.where(m, y, 0.0)
                self.xty[k][:, 0] += torch.einsum("bp,bpd->pd", yv, X)
                self.ty[k][:, 0] += yv.sum(0)

    def solve(self) -> None:
        """Fit every probe from the accumulated statistics (module docstring)."""
        count = self.count - self.ex_count  # [G, P]
        self.n_train = count
        n = count.clamp_min(1)[..., None]
        mu = (self.sum - self.ex_sum) / n  # [G, P, d]
        scatter = self.gram - self.ex_gram - count[..., None, None] * mu[..., :, None] * mu[..., None, :]
        var = torch.diagonal(scatter, dim1=-2, dim2=-1).clamp_min(0) / n
        second = torch.diagonal(self.gram - self.ex_gram, dim1=-2, dim2=-1).clamp_min(0) / n  # E[x^2]
        sigma = var.sqrt()
        # a feature is constant when its variance is float32 rounding of its values (var / E[x^2] at
        # ~1e-14), not only when it is tiny next to the other features' spread: dividing that noise by
        # itself would make Z^T Z noise of order one, and indefinite
        varying = (sigma > 1e-7 * sigma.amax(-1, keepdim=True).clamp_min(1e-30)) & (var > 1e-10 * second)
        sigma = torch.where(varying, sigma, 1.0)
        scatter_z = scatter / (sigma[..., :, None] * sigma[..., None, :])  # Z^T Z of standardised features
        ridge = self.alpha * torch.eye(self.d, dtype=torch.float64)
        L_total: Tensor | None = None  # Cholesky of Z^T Z + alpha I, shared by the continuous targets
        for k, s in enumerate(self.sets):
            g = s.group
            if s.categorical:
                W, b = self._lda(self.xty[k], self.ty[k], mu[g], sigma[g], scatter_z[g] + ridge, count[g])
            else:
                if L_total is None:
                    L_total = torch.linalg.cholesky(scatter_z + ridge)  # [G, P, d, d]
                B = (self.xty[k].transpose(1, 2) - mu[g][:, :, None] * self.ty[k][:, None, :]) / sigma[g][
                    :, :, None
                ]
                W = torch.cholesky_solve(B, L_total[g]) / sigma[g][:, :, None]  # [P, d, 1] on raw features
                b = self.ty[k] / n[g] - torch.einsum("pd,pdc->pc", mu[g], W)
            # categorical: only the argmax matters, so score in float32 (the bulk of the work)
            dtype = torch.float32 if s.categorical else torch.float64
            self.W.append(W.to(dtype))
            self.b.append(b.to(dtype)[:, None, :])

    @staticmethod
    def _lda(
        class_sum: Float[Tensor, "P C d"],
        class_count: Float[Tensor, "P C"],
        mu: Float[Tensor, "P d"],
        sigma: Float[Tensor, "P d"],
        total: Float[Tensor, "P d d"],
        count: Float[Tensor, " P"],
    ) -> tuple[Float[Tensor, "P d C"], Float[Tensor, "P C"]]:
        """Linear discriminant weights on raw features from class sums and the (ridged) total
        scatter of standardised features: within = total - sum_c n_c m_c m_c^T, covariance
        within / n, score_c(z) = z . cov^-1 m_c - m_c . cov^-1 m_c / 2 + log(n_c / n)."""
        seen = class_count > 0
        means = torch.where(seen[..., None], class_sum / class_count.clamp_min(1)[..., None], mu[:, None, :])
        m = (means - mu[:, None, :]) / sigma[:, None, :]  # [P, C, d] standardised class means
        within = total - torch.einsum("pc,pcd,pce->pde", class_count, m, m)
        coef = torch.cholesky_solve(m.transpose(1, 2), torch.linalg.cholesky(within)) * count[:, None, None]
        prior = (class_count / count.clamp_min(1)[:, None]).log()
        b = prior - 0.5 * torch.einsum("pcd,pdc->pc", m, coef)
        W = coef / sigma[:, :, None]  # back to raw features: z = (x - mu) / sigma
        b = b - torch.einsum("pd,pdc->pc", mu, W)
        return W, b.masked_fill(~seen, float("-inf"))  # a class never seen in training is never predicted

    def add_test(self, start: int, X: Float[Tensor, "b P d"]) -> None:
        if not self.W:
            raise RuntimeError("ClosedFormBank.add_test before solve()")
        split = self.is_test[start : start + X.shape[0]]
        Xp = X[split].transpose(0, 1)  # [P, b_test, d]
        Xp = {dtype: Xp.to(dtype).contiguous() for dtype in {w.dtype for w in self.W}}
        masks = self.masks[:, start : start + split.shape[0]][:, split].transpose(1, 2)  # [G, P, b_test]
        for k, s in enumerate(self.sets):
            scores = torch.baddbmm(self.b[k], Xp[self.W[k].dtype], self.W[k])  # [P, b_test, C]
            m = masks[s.group]
            y = self.values[k][start : start + split.shape[0]][split].T  # [P, b_test]
            st = self.test_stats[k]
            st[0] += m.sum(1)
            if s.categorical:
                st[1] += ((scores.argmax(-1) == y) & m).sum(1)
                majority = self.ty[k].argmax(-1)  # [P], the most frequent training class
                st[2] += ((y == majority[:, None]) & m).sum(1)
            else:
                yv = torch.where(m, y, 0.0)
                st[1] += ((yv - scores[..., 0]) ** 2 * m).sum(1)
                st[2] += yv.sum(1)
                st[3] += (yv**2).sum(1)

    def scores(self) -> list[dict[str, np.ndarray]]:
        """Per label set: ``score``, ``chance``, ``n_train``, ``n_test`` arrays over positions."""
        out = []
        for k, s in enumerate(self.sets):
            n_test, a, b, c = self.test_stats[k]
            if s.categorical:
                score, chance = a / n_test.clamp_min(1), b / n_test.clamp_min(1)
            else:
                ss_tot = c - b**2 / n_test.clamp_min(1)
                score, chance = 1 - a / ss_tot, torch.zeros_like(a)
            out.append(
                {
                    "score": score.numpy(),
                    "chance": chance.numpy(),
                    "n_train": self.n_train[s.group].numpy().astype(np.int64),
                    "n_test": n_test.numpy().astype(np.int64),
                }
            )
        return out


def sklearn_probe(
    X: Float[np.ndarray, "n d"],
    y: np.ndarray,
    valid: Bool[np.ndarray, " n"],
    is_test: Bool[np.ndarray, " n"],
    categorical: bool,
    alpha: float = 1.0,
    max_iter: int = 1000,
) -> dict[str, float]:
    """One probe fitted by scikit-learn (the reference solver): ``StandardScaler``, then
    multinomial ``LogisticRegression(C = 1 / (2 alpha))`` or ``Ridge(alpha)``; test accuracy or
    R^2 as ``score``, the most-frequent-training-label accuracy as ``chance``, and whether the
    solver converged within ``max_iter`` iterations as ``converged`` (scikit-learn's per-fit
    ConvergenceWarning is silenced; :func:`probe_store` reports the count once)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    tr, te = valid & ~is_test, valid & is_test
    scaler = StandardScaler().fit(X[tr])
    Xtr, Xte = scaler.transform(X[tr]), scaler.transform(X[te])
    ytr, yte = y[tr], y[te]
    if not categorical:
        score = float(Ridge(alpha=alpha).fit(Xtr, ytr).score(Xte, yte))
        return {"score": score, "chance": 0.0, "converged": True}
    classes, counts = np.unique(ytr, return_counts=True)
    chance = float(np.mean(yte == classes[np.argmax(counts)]))
    if len(classes) < 2:
        return {"score": chance, "chance": chance, "converged": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=1.0 / (2.0 * alpha), max_iter=max_iter).fit(Xtr, ytr)
    converged = bool(np.all(clf.n_iter_ < max_iter))
    return {"score": float(clf.score(Xte, yte)), "chance": chance, "converged": converged}


def probe_store(
    store: ActivationStore,
    targets: Mapping[str, object],
    hooks: Sequence[str] | None = None,
    *,
    solver: str = "closed_form",
    alpha: float = 1.0,
    test_frac: float = 0.2,
    seed: int = 0,
    chunk_size: int = 2048,
    max_iter: int = 1000,
    progress: bool = False,
):  # noqa: ANN201 - pandas.DataFrame
    """Probe every hook (default: all in ``store``) x stored position for every target; one tidy
    row per probe.

    ``targets`` maps names to ``[n]`` or ``[n, seq_len]`` arrays: integer = categorical (negative
    = no label there, left out), float = continuous (NaN left out). Columns: ``hook, layer,
    position, target, metric, score, control_score, selectivity, n_train, n_test, chance``; metric
    is ``accuracy`` (categorical) or ``r2`` (continuous); ``chance`` is the test accuracy of always
    answering the most frequent training label (0 for R^2). Probes with fewer than 2 training or 1
    test example are left out.
    """
    import pandas as pd

    check_probe_settings(solver, alpha, test_frac, chunk_size, store.n)
    hooks = list(store.hooks if hooks is None else hooks)
    for hook in hooks:
        if hook not in store.dims:
            raise ValueError(f"hook {hook!r} is not in the activation store (it has {store.hooks})")
    is_test = split_examples(store.n, test_frac, seed)
    sets, masks = make_label_sets(targets, store.n, store.positions, seed)
    rows = []
    n_fits = n_unconverged = 0
    bar = tqdm(hooks, desc=f"probe ({solver})", disable=not progress, leave=False)
    for hook in bar:
        if solver == "closed_form":
            bank = ClosedFormBank(sets, masks, is_test, store.dims[hook], alpha)
            for start, X in store.chunks(hook, chunk_size):
                bank.add_train(start, torch.from_numpy(X))
            bank.solve()
            for start, X in store.chunks(hook, chunk_size):
                bank.add_test(start, torch.from_numpy(X))
            per_set = bank.scores()
        else:
            per_set = [{k: np.zeros(len(store.positions)) for k in ("score", "chance")} for _ in sets]
            for j, position in enumerate(store.positions):
                X = store.features(hook, position).astype(np.float64)
                for k, s in enumerate(sets):
                    valid = masks[s.group][:, j]
                    if (valid & ~is_test).sum() >= 2 and (valid & is_test).sum() >= 1:
                        fit = sklearn_probe(X, s.values[:, j], valid, is_test, s.categorical, alpha, max_iter)
                        n_fits += 1
                        n_unconverged += not fit.pop("converged")
                        for key, v in fit.items():
                            per_set[k][key][j] = v
            for k, s in enumerate(sets):
                per_set[k]["n_train"] = (masks[s.group] & ~is_test[:, None]).sum(0)
                per_set[k]["n_test"] = (masks[s.group] & is_test[:, None]).sum(0)
        for k in range(0, len(sets), 2):  # (target, control) pairs
            s, main, ctrl = sets[k], per_set[k], per_set[k + 1]
            for j, position in enumerate(store.positions):
                if main["n_train"][j] < 2 or main["n_test"][j] < 1:
                    continue
                score, control = float(main["score"][j]), float(ctrl["score"][j])
                rows.append(
                    {
                        "hook": hook,
                        "layer": hook_layer(hook),
                        "position": position,
                        "target": s.target,
                        "metric": "accuracy" if s.categorical else "r2",
                        "score": score,
                        "control_score": control,
                        "selectivity": score - control,
                        "n_train": int(main["n_train"][j]),
                        "n_test": int(main["n_test"][j]),
                        "chance": float(main["chance"][j]),
                    }
                )
    if n_unconverged:
        warnings.warn(
            f"{n_unconverged} of {n_fits} logistic-regression probes (targets and controls) stopped at "
            f"max_iter={max_iter} before converging; their scores may be slightly low (raise max_iter)",
            RuntimeWarning,
            stacklevel=2,
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def probe_features(
    features: Float[np.ndarray, "n d"],
    targets: Mapping[str, object],
    **kwargs: object,
):  # noqa: ANN201 - pandas.DataFrame
    """Probe one feature matrix (e.g. activations you already hold) for ``targets`` (each ``[n]``):
    :func:`probe_store` on an in-memory store with a single hook ``"features"`` at position 0."""
    X = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    if X.ndim != 2:
        raise ValueError(f"features must be [n, d]; got shape {X.shape}")
    for name, v in targets.items():
        if np.ndim(v) != 1:
            raise ValueError(f"probe_features: target {name!r} must be [n]; got shape {np.shape(v)}")
    store = ActivationStore({"features": X.shape[1]}, X.shape[0], [0])
    store.append({"features": X[:, None, :]})
    return probe_store(store, targets, **kwargs)
