"""Path patching: no-op source, equality with activation patching, receivers before the sender."""

import pytest
import torch

from reasonlens.analysis import activation_patching
from reasonlens.analysis.path_patching import (
    Receiver,
    Sender,
    default_receivers,
    downstream_receivers,
    path_patching,
)
from reasonlens.models import Transformer
from tests.conftest import tiny_config


def runs(seed=3):
    """Clean and corrupted prompts (the corruption at positions 2 and 5) and two answer tokens."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 50, (6, 9), generator=gen)
    corrupt = clean.clone()
    corrupt[:, [2, 5]] = torch.randint(0, 50, (6, 2), generator=gen)
    good = torch.randint(0, 50, (6,), generator=gen)
    bad = (good + 1 + torch.randint(0, 48, (6,), generator=gen)) % 50
    return clean, corrupt, good, bad


def three_layer(norm):
    return Transformer(tiny_config(n_layers=3, norm=norm, attn_bias=True, mlp_bias=True, seed=5))


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_clean_source_changes_nothing(norm):
    model = three_layer(norm)
    clean, _, good, bad = runs()
    df = path_patching(model, clean, clean, good, bad, skip_unchanged=False)  # every path really runs
    assert len(df) > 0 and set(df.receiver_input) == {"q", "k", "v", "mlp", "logits", "all"}
    assert df.effect.abs().max() < 1e-5
    assert df.score.isna().all()  # clean and source give the same logit difference: no scale


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_sender_into_every_downstream_input_is_activation_patching(norm):
    model = three_layer(norm)
    clean, corrupt, good, bad = runs()
    senders = [("attn", 0), ("mlp", 0), ("attn", 1), ("mlp", 2)]
    df = path_patching(model, clean, corrupt, good, bad, senders=senders, receivers=[("logits",)])
    exact = activation_patching(
        model, clean, corrupt, good, bad, direction="noise", sites=["attn_out", "mlp_out"]
    )
    exact = exact.set_index(["hook", "position"]).score
    total = df[df.receiver == "all downstream"]
    assert len(total) == len(senders) * 9
    for r in total.itertuples():
        hook = f"blocks.{r.sender_layer}.hook_{r.sender_kind}_out"
        assert r.score == pytest.approx(exact[hook, r.position], abs=1e-4), (r.sender, r.position)
    # the corruption moves the sender's output from position 2 on: the comparison is not trivial
    assert (total[total.position >= 2].score - 1).abs().max() > 1e-2
    assert (total[total.position < 2].score - 1).abs().max() < 1e-5


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_head_sender_into_every_downstream_input_is_patching_that_head(norm):
    model = three_layer(norm)
    clean, corrupt, good, bad = runs()
    df = path_patching(model, clean, corrupt, good, bad, senders=[("head", 1, 1)], receivers=[("logits",)])
    _, cache = model.run_with_cache(corrupt, names_filter=["blocks.1.attn.hook_z"])
    source = cache["blocks.1.attn.hook_z"]
    ar = torch.arange(6)
    for r in df[df.receiver == "all downstream"].itertuples():

        def patch(z, hook, p=r.position):
            z = z.clone()
            z[:, p, 1] = source[:, p, 1]
            return z

        with torch.no_grad():
            logits = model.run_with_hooks(clean, fwd_hooks=[("blocks.1.attn.hook_z", patch)])
        ld = (logits[ar, -1, good] - logits[ar, -1, bad]).mean().item()
        assert r.patched_logit_diff == pytest.approx(ld, abs=1e-4)


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_receiver_before_its_sender_has_no_effect(norm):
    model = three_layer(norm)
    clean, corrupt, good, bad = runs()
    before = [("q", 0), ("k", 1, 0), ("attn", 1), ("mlp", 0), ("v", 1)]
    df = path_patching(model, clean, corrupt, good, bad, senders=[("mlp", 1)], receivers=before, total=False)
    assert len(df) == len(before) * 9 and df.effect.abs().max() < 1e-5
    head = path_patching(
        model,
        clean,
        corrupt,
        good,
        bad,
        senders=[("head", 1, 0)],
        receivers=[("attn", 1), ("q", 1)],
        total=False,
    )
    assert head.effect.abs().max() < 1e-5
    # ... while receivers after it do see the corruption
    after = path_patching(
        model, clean, corrupt, good, bad, senders=[("mlp", 1)], receivers=[("q", 2), ("logits",)], total=False
    )
    assert after.effect.abs().max() > 1e-3


def test_skipping_unchanged_senders_changes_no_result():
    """Where the corrupted sender equals the clean one (before the first corrupted token) the rows
    are filled in without a run; they match what running them gives."""
    model = three_layer("post")
    clean, corrupt, good, bad = runs()
    fast = path_patching(model, clean, corrupt, good, bad, senders=[("attn", 0), ("mlp", 1)])
    slow = path_patching(
        model, clean, corrupt, good, bad, senders=[("attn", 0), ("mlp", 1)], skip_unchanged=False
    )
    assert len(fast) == len(slow) and (fast.position < 2).any()
    assert (fast.effect - slow.effect).abs().max() < 1e-5
    assert (fast[fast.position < 2].effect == 0).all()


def test_one_side_only():
    """Patching the query side, the key side and the value side of a layer are different paths;
    all three at once is the whole attention input."""
    model = three_layer("pre")
    clean, corrupt, good, bad = runs()
    df = path_patching(
        model, clean, corrupt, good, bad, senders=[("attn", 0)],
        receivers=[("q", 1), ("k", 1), ("v", 1), ("attn", 1)], positions=[5], total=False,
    )  # fmt: skip
    effect = df.set_index("receiver_input").effect
    assert len({round(float(e), 6) for e in effect}) == 4
    assert effect["attn"] != pytest.approx(0.0, abs=1e-4)


def test_defaults_and_labels():
    model = three_layer("post")
    rs = default_receivers(model, Sender("attn", 1))
    assert [r.label for r in rs] == ["L1 mlp", "L2 q", "L2 k", "L2 v", "L2 mlp", "logits"]
    assert [r.label for r in downstream_receivers(model, Sender("mlp", 0))] == [
        "L1 attn", "L1 mlp", "L2 attn", "L2 mlp", "logits",
    ]  # fmt: skip
    assert Sender("head", 2, 1).label == "L2 H1" and Receiver("q", 2, 0).label == "L2 H0 q"


def test_bad_input_and_mode():
    model = three_layer("pre")
    model.train()
    clean, corrupt, good, bad = runs()
    for kwargs, message in (
        (dict(senders=[("attn", 3)]), "layer 3 is outside 0..2"),
        (dict(senders=[("head", 0, 2)]), "head 2 is outside 0..1"),
        (dict(senders=[("resid", 0)]), "kind must be one of"),
        (dict(receivers=[("z", 1)]), "input must be one of"),
        (dict(receivers=[("mlp", 1, 0)]), "only a q, k or v receiver names a head"),
        (dict(positions=[9]), "position 9 is outside"),
    ):
        with pytest.raises(ValueError, match=message):
            path_patching(model, clean, corrupt, good, bad, **kwargs)
    with pytest.raises(ValueError, match="must both be"):
        path_patching(model, clean, corrupt[:, :4], good, bad)
    with pytest.raises(ValueError, match="clean_answers must be tokens in 0..49"):
        path_patching(model, clean, corrupt, good + 50, bad)
    noisy = Transformer(tiny_config(n_layers=2, noise="identity", noise_alpha=0.5))
    with pytest.raises(ValueError, match="attention noise"):
        path_patching(noisy, clean, corrupt, good, bad, receivers=[("q", 1)])
    with pytest.raises(ValueError, match="attention noise"):
        path_patching(noisy, clean, corrupt, good, bad, senders=[("head", 0, 1)])
    whole = path_patching(noisy, clean, corrupt, good, bad, receivers=[("attn", 1)], positions=[5])
    assert set(whole.sender_kind) == {"attn", "mlp"} and whole.effect.abs().max() > 0
    df = path_patching(model, clean, corrupt, good, bad, senders=[("attn", 1)], positions=[-1])
    assert set(df.position) == {8} and model.training and all(m.training for m in model.modules())


def frozen_reference(model, clean, corrupt, good, bad, sender_hook, position, receiver_hook):
    """An independent reading of one path (Wang et al.'s two steps): run the clean prompt with
    every sublayer output frozen at its clean value except the sender's, swapped at ``position``;
    then run the clean prompt again with only ``receiver_hook`` taken from that frozen run
    (``None``: the frozen run's logits)."""
    names = [f"blocks.{layer}.hook_{kind}_out" for layer in range(3) for kind in ("attn", "mlp")]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, names_filter=names)
        _, source_cache = model.run_with_cache(corrupt, names_filter=names)

        def freeze(act, hook):
            new = clean_cache[hook.name].clone()
            if hook.name == sender_hook:
                new[:, position] = source_cache[hook.name][:, position]
            return new

        frozen = {}

        def keep(act, hook):
            frozen[hook.name] = act.clone()
            return act

        hooks = [(name, freeze) for name in names] + ([(receiver_hook, keep)] if receiver_hook else [])
        logits = model.run_with_hooks(clean, fwd_hooks=hooks)
        if receiver_hook is not None:
            logits = model.run_with_hooks(
                clean, fwd_hooks=[(receiver_hook, lambda a, hook: frozen[hook.name])]
            )
    ar = torch.arange(clean.shape[0])
    return (logits[ar, -1, good] - logits[ar, -1, bad]).mean().item()


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_one_receiver_gets_the_direct_path_only(norm):
    """Through one receiver, only the sender's direct path counts: the components between sender
    and receiver keep their clean outputs (for post-LN the stream still passes each LayerNorm)."""
    model = three_layer(norm)
    clean, corrupt, good, bad = runs()
    receivers = {("logits",): None, ("q", 2): "blocks.2.attn.hook_q", ("mlp", 1): "blocks.1.mlp.hook_pre"}
    df = path_patching(
        model, clean, corrupt, good, bad, senders=[("attn", 0)], receivers=list(receivers), positions=[2, 5]
    )
    got = df.set_index(["receiver", "position"]).patched_logit_diff
    for receiver, hook in receivers.items():
        for p in (2, 5):
            want = frozen_reference(model, clean, corrupt, good, bad, "blocks.0.hook_attn_out", p, hook)
            assert got[Receiver(*receiver).label, p] == pytest.approx(want, abs=1e-4), (receiver, p)
    direct = got["logits", 5]
    assert abs(direct - got["all downstream", 5]) > 1e-3  # the direct path is not the total effect
