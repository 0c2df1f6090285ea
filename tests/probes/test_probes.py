"""Probes: planted features are found, noise is not, and the fast path matches scikit-learn."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from reasonlens.models import ModelConfig, Transformer
from reasonlens.probes import (
    ActivationStore,
    collect_activations,
    matching_targets,
    probe_features,
    probe_store,
    probe_sweep,
    resid_hooks,
    split_examples,
)
from reasonlens.probes.linear import COLUMNS
from reasonlens.tasks import matching


def planted(n=1200, d=16, n_classes=4, seed=0):
    """Features with a linearly decodable class and a continuous value, plus a noise label."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, d))
    feature = (Z @ rng.normal(size=(n_classes, d)).T).argmax(1)  # balanced classes
    value = Z @ rng.normal(size=d) + 0.05 * rng.normal(size=n)
    X = Z * rng.uniform(0.5, 3.0, size=d) + 5.0  # scales and an offset, so standardising matters
    noise = rng.integers(0, n_classes, size=n)
    return X, {"feature": feature, "value": value, "noise": noise}


def small_model(**kw):
    cfg = dict(n_layers=2, d_model=16, d_mlp=32, n_ctx=13, d_vocab=201, norm="post", seed=3)
    cfg.update(kw)
    return Transformer(ModelConfig(**cfg))


@pytest.fixture(scope="module")
def data():
    return matching.generate(300, split="test", seed=5)


def test_planted_feature_is_recovered_and_noise_is_at_chance():
    X, targets = planted()
    df = probe_features(X, targets).set_index("target")
    assert list(probe_features(X, targets).columns) == COLUMNS
    assert df.loc["feature", "score"] > 0.85
    assert df.loc["feature", "selectivity"] > 0.5
    assert df.loc["value", "metric"] == "r2" and df.loc["value", "score"] > 0.99
    assert abs(df.loc["value", "control_score"]) < 0.1  # shuffled values: no better than the mean
    for col in ("score", "control_score"):  # a label unrelated to the features: chance level
        assert df.loc["noise", col] < df.loc["noise", "chance"] + 0.1
    assert abs(df.loc["feature", "control_score"] - df.loc["feature", "chance"]) < 0.1
    assert (df.n_train == 960).all() and (df.n_test == 240).all()


def test_categorical_closed_form_is_linear_discriminant_analysis():
    X, targets = planted(n=500, d=12, n_classes=5, seed=1)
    y = targets["feature"].copy()
    y[::7] = -1  # missing labels are left out
    y[[3, 4]] = 9  # a rare class
    ours = probe_features(X, {"feature": y}, alpha=1e-9).set_index("target")
    is_test = split_examples(len(X), 0.2, 0)
    valid = y >= 0
    tr, te = valid & ~is_test, valid & is_test
    lda = LinearDiscriminantAnalysis(solver="lsqr").fit(X[tr], y[tr])
    assert ours.loc["feature", "score"] == pytest.approx(lda.score(X[te], y[te]), abs=1e-12)
    assert ours.loc["feature", "n_train"] == tr.sum() and ours.loc["feature", "n_test"] == te.sum()


@pytest.mark.parametrize("alpha", [0.1, 10.0])
def test_continuous_closed_form_equals_scikit_learn_ridge(alpha):
    X, targets = planted(n=500, d=12, seed=1)
    ours = probe_features(X, {"value": targets["value"]}, alpha=alpha).set_index("target")
    is_test = split_examples(len(X), 0.2, 0)
    scaler = StandardScaler().fit(X[~is_test])
    reg = Ridge(alpha=alpha).fit(scaler.transform(X[~is_test]), targets["value"][~is_test])
    r2 = reg.score(scaler.transform(X[is_test]), targets["value"][is_test])
    assert ours.loc["value", "score"] == pytest.approx(r2, abs=1e-9)


def test_more_classes_than_dimensions():
    """Twelve well-separated clusters in four dimensions: every class is recovered (a least-squares
    classifier on one-hot labels would lose some of them)."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(12, 4)) * 5
    y = rng.integers(0, 12, size=1200)
    X = centres[y] + 0.1 * rng.normal(size=(1200, 4))
    assert probe_features(X, {"cluster": y}).score.item() > 0.99


def test_closed_form_agrees_with_logistic_regression():
    X, targets = planted(n=800, d=10, seed=2)
    fast = probe_features(X, targets).set_index("target")
    slow = probe_features(X, targets, solver="sklearn").set_index("target")
    assert fast.loc["value", "score"] == pytest.approx(slow.loc["value", "score"], abs=1e-9)
    for target in ("feature", "noise"):
        assert fast.loc[target, "score"] == pytest.approx(slow.loc[target, "score"], abs=0.08)
        assert fast.loc[target, "chance"] == slow.loc[target, "chance"]


def test_results_do_not_depend_on_the_chunk_size():
    X, targets = planted(n=400, d=8)
    a = probe_features(X, targets, chunk_size=4096)
    b = probe_features(X, targets, chunk_size=37)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-9)


def test_collect_keeps_only_requested_hooks_and_positions(data, tmp_path):
    model = small_model()
    hooks = ["blocks.0.hook_resid_post", "blocks.0.attn.hook_z"]
    store = collect_activations(model, data.inputs, hooks, positions=[1, -1], batch_size=64, path=tmp_path)
    _, cache = model.run_with_cache(data.inputs)
    assert store.hooks == hooks and store.positions == [1, 12] and store.n == len(data)
    torch.testing.assert_close(
        torch.from_numpy(store.read(hooks[0], 0, len(data))), cache[hooks[0]][:, [1, 12]]
    )
    z = cache[hooks[1]][:, [1, 12]].flatten(2)  # [n, pos, head * d_head] is stored as the last axis
    torch.testing.assert_close(torch.from_numpy(store.features(hooks[1], 12)), z[:, 1])
    reopened = ActivationStore.open(tmp_path)
    np.testing.assert_array_equal(reopened.features(hooks[0], 1), store.features(hooks[0], 1))


def test_on_disk_store_gives_the_same_probes_as_memory(data, tmp_path):
    model = small_model()
    memory = probe_sweep(model, data, store="memory", batch_size=64, chunk_size=50)
    disk = probe_sweep(model, data, store=tmp_path / "acts", batch_size=64, chunk_size=50)
    pd.testing.assert_frame_equal(memory, disk)
    temporary = probe_sweep(model, data, batch_size=128)
    pd.testing.assert_frame_equal(memory, temporary, check_exact=False, rtol=1e-9, atol=1e-9)
    reused = probe_sweep(model, data, store=ActivationStore.open(tmp_path / "acts"), chunk_size=50)
    pd.testing.assert_frame_equal(memory, reused)
    # every hook x position x target, once
    hooks = resid_hooks(2)
    assert set(memory.hook) == set(hooks)
    assert len(memory) == len(hooks) * 13 * 5 - len(hooks) * 0  # parent exists at every position
    assert not memory.duplicated(["hook", "position", "target"]).any()
    assert set(memory.layer) == {0, 1}


def test_token_identity_is_decodable_from_the_embedding(data):
    """The residual stream entering block 0 is embedding + position: the token at each position is
    linearly decodable there, and the query's k-hop answer is not (the model is untrained)."""
    model = small_model(d_model=64)
    df = probe_sweep(model, data, ["token", "hop2"], hooks=["blocks.0.hook_resid_pre"], positions=[12])
    df = df.set_index("target")
    assert df.loc["token", "score"] > 0.9
    assert df.loc["hop2", "score"] < 0.2


def test_matching_targets(data):
    t = matching_targets(data)
    assert list(t) == ["hop0", "hop1", "hop2", "parent", "token"]
    assert torch.equal(t["hop0"], data.inputs[:, data.query_pos])
    assert torch.equal(t["hop2"], data.answers)
    assert torch.equal(t["parent"], data.parents_at())
    assert list(matching_targets(data, ["hop1"])) == ["hop1"]
    with pytest.raises(ValueError, match="unknown matching target.*'hop7'"):
        matching_targets(data, ["hop7"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hooks=["blocks.9.hook_resid_post"]), "'blocks.9.hook_resid_post' does not exist"),
        (dict(positions=[13]), "position 13 is out of range"),
        (dict(hooks=["blocks.0.attn.hook_pattern"]), "probes need"),
        (dict(targets={"x": np.zeros(7, dtype=int)}), "target 'x' must have shape"),
        (dict(targets={"x": np.array(["a"] * 300)}), "must be integer"),
        (dict(solver="svm"), "solver must be one of"),
        (dict(alpha=-1.0), "alpha must be"),
        (dict(test_frac=0.0), "test_frac"),
        (dict(targets=["nope"]), "unknown matching target"),
    ],
)
def test_bad_input_fails_before_the_forward_pass(data, kwargs, message):
    model = small_model()

    def refuse(*args, **kw):
        raise AssertionError("the model ran before the input was checked")

    model.run_with_cache = refuse
    with pytest.raises(ValueError, match=message):
        probe_sweep(model, data, **kwargs)


def test_bad_probe_settings_are_named():
    X, targets = planted(n=50, d=4)
    with pytest.raises(ValueError, match="alpha must be"):
        probe_features(X, targets, alpha=0)
    with pytest.raises(ValueError, match="test_frac"):
        probe_features(X, targets, test_frac=1.5)
    store = ActivationStore({"h": 4}, 50, [0])
    with pytest.raises(ValueError, match="holds 0 of its 50 examples"):
        probe_store(store, targets)
    with pytest.raises(ValueError, match="hook 'other' is not in the activation store"):
        store.append({"h": X[:, None, :]})
        probe_store(store, targets, ["other"])


def test_unconverged_logistic_probes_are_reported_once():
    """A one-iteration budget cannot converge: one summary warning, not one per fit, and the
    probes still return a score for every target."""
    import warnings

    X, targets = planted(n=300, d=6, seed=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = probe_features(X, targets, solver="sklearn", max_iter=1)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "stopped at max_iter=1 before converging" in messages[0]
    assert not [w for w in caught if "ConvergenceWarning" in w.category.__name__]
    assert set(table.target) == set(targets)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a generous budget converges: no warning at all
        probe_features(X, targets, solver="sklearn", max_iter=1000)


def test_interrupted_refill_does_not_reopen_as_complete(tmp_path):
    from reasonlens.probes.store import ActivationStore

    full = ActivationStore({"h": 4}, 6, [0], path=tmp_path / "s")
    full.append({"h": np.ones((6, 1, 4), np.float32)})
    assert ActivationStore.open(tmp_path / "s").n == 6
    again = ActivationStore({"h": 4}, 6, [0], path=tmp_path / "s")  # a new collection, killed midway
    again.append({"h": np.ones((3, 1, 4), np.float32)})
    with pytest.raises(FileNotFoundError, match="no activation store"):
        ActivationStore.open(tmp_path / "s")


def test_features_constant_up_to_float32_rounding_are_left_out_not_divided_by_their_noise():
    # a stream that is the same vector for every example, up to float32 rounding (as at a position
    # holding one fixed token), beside one informative feature
    rng = np.random.default_rng(0)
    n, d = 400, 64
    base = rng.normal(size=d).astype(np.float32) * 30
    X = np.repeat(base[None], n, axis=0) * (1 + rng.normal(size=(n, d)).astype(np.float32) * 1e-7)
    y = rng.normal(size=n)
    X[:, 0] = y.astype(np.float32)
    table = probe_features(X.astype(np.float32), {"y": y, "z": rng.normal(size=n)}, solver="closed_form")
    score = table.set_index("target").score
    assert score["y"] > 0.99  # the informative feature still fits
    assert score["z"] < 0.05  # and the rounding noise explains nothing
