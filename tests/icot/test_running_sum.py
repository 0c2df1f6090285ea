"""The auxiliary running-sum loss: targets, alignment with the answer, heads, training."""

import pytest
import torch

from reasonlens.icot import RunningSumHeads, add_running_sums, running_sums, train_running_sum
from reasonlens.icot.running_sum import TARGET_SCALE, evaluate_running_sum, running_sum_loss
from reasonlens.models import Transformer
from reasonlens.tasks import multiplication as M
from reasonlens.training import TrainConfig
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def splits():
    return M.make_splits((3, 3), n_train=64, n_valid=8, n_test=8, seed=0)


def test_running_sums_by_hand():
    # 12 x 34 = 408; digits least significant first: a = (2, 1), b = (4, 3)
    # c0 = 2*4 = 8; c1 = 2*3 + 1*4 + 8//10 = 10; c2 = 1*3 + 10//10 = 4; c3 = 4//10 = 0
    assert running_sums(torch.tensor([12]), torch.tensor([34]), 2, 2).tolist() == [[8, 10, 4, 0]]


def test_running_sums_spell_the_product(splits):
    data = splits["train"]
    c = running_sums(data.a, data.b, 3, 3)
    value = sum((c[:, k] % 10) * 10**k for k in range(6))
    assert torch.equal(value, data.a * data.b)
    assert (c >= 0).all() and c.max() <= 3 * 81 + 30


def test_targets_sit_where_each_answer_digit_is_predicted(splits):
    data = splits["train"][:10]
    batch = add_running_sums(data.batch("nocot"), data)
    sums, start = batch.extra["running_sum"], batch.extra["answer_start"]
    digit_tokens = [M.TOKEN[str(d)] for d in range(10)]
    for i in range(len(data)):
        assert int(batch.inputs[i, start[i] - 1]) == M.SEP
        assert int(batch.inputs[i, start[i]]) == M.ANSWER
        for k in range(6):  # the input at start + k predicts answer digit k = c_k mod 10
            assert int(batch.targets[i, start[i] + k]) == digit_tokens[int(sums[i, k]) % 10]
            assert bool(batch.mask[i, start[i] + k])


def _module(splits, weight=1.0, seed=0):
    cfg = tiny_config(
        d_vocab=M.D_VOCAB, n_ctx=splits["train"].max_len, d_model=16, d_head=8, d_mlp=32, seed=seed
    )
    return RunningSumHeads(Transformer(cfg), weight=weight)


def test_loss_is_lm_plus_weighted_mse_of_every_head(splits):
    batch = add_running_sums(splits["train"].batch("nocot"), splits["train"])[:8]
    mod = _module(splits, weight=2.5)
    out = mod.losses(batch)
    logits, pred = mod.forward_with_sums(batch.inputs)
    assert torch.allclose(logits, mod(batch.inputs))
    pos = batch.extra["answer_start"][:, None] + torch.arange(6)[None, :]
    at = pred[torch.arange(8)[:, None], pos]  # [8, 6, heads]
    mse = (at - batch.extra["running_sum"][:, :, None] / TARGET_SCALE).pow(2).mean()
    assert torch.allclose(out["sum_mse"], mse)
    assert torch.allclose(out["loss"], out["lm"] + 2.5 * mse)
    assert torch.allclose(running_sum_loss(mod, batch), out["loss"])
    out["loss"].backward()
    assert mod.W_sum.grad is not None and mod.W_sum.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="weight must be a finite number >= 0; got -1"):
        _module(splits, weight=-1)
    with pytest.raises(ValueError, match="no extra\\['running_sum'\\]"):
        mod.losses(splits["train"].batch("nocot"))


def test_training_resumes_and_saves_the_plain_transformer(splits, tmp_path):
    cfg = TrainConfig(steps=6, batch_size=8, lr=3e-3, eval_every=3, checkpoint_every=3, progress=False)
    a = _module(splits)
    res = train_running_sum(a, splits, cfg, tmp_path / "a")
    assert {"sum_mse", "sum_mae_best_head", "accuracy"} <= set(res.metrics.metric)
    loaded = Transformer.load(tmp_path / "a" / "model.safetensors")
    tokens = splits["test"].batch("nocot").inputs
    assert torch.equal(loaded(tokens), a.model.eval()(tokens))
    # a finished run reloads; the heads come back with the weights
    b = _module(splits, seed=5)
    train_running_sum(b, splits, cfg, tmp_path / "a")
    assert torch.equal(a.W_sum, b.W_sum)
    ev = evaluate_running_sum(b, add_running_sums(splits["valid"].batch("nocot"), splits["valid"]), 4)
    assert ev["sum_mae_best_head"] >= 0
