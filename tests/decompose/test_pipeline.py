"""The three sequence formats against a hand-made example, and the chained decomposer + solver
pipeline end to end: with lookup models that know the true sequences it must score 1, with a
wrong decomposer it must not, and a tiny real training runs through every method."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from reasonlens.decompose import PRESETS, evaluate, make_batch, run_seed, sequence, tokenizer_for
from reasonlens.decompose.formats import cot_answer, generation_limits, last_number, same_number, trim
from reasonlens.decompose.pipeline import decompose, make_data, solve
from reasonlens.tasks.wordproblems import Step, WordProblem, generate_problems

HAND = WordProblem(
    "Ann has 5 pens. Ann buys 3 more. Ann doubles them. How many pens does Ann have now?",
    (Step("How many pens after buying?", "5 + 3 = <<5+3=8>>8 pens."),
     Step("How many pens after doubling?", "8 * 2 = <<8*2=16>>16 pens.")),
    "16",
)  # fmt: skip
Q = "Ann has 5 pens . Ann buys 3 more . Ann doubles them . How many pens does Ann have now ? <sep>"


def words(tok, ids):
    return " ".join(tok.vocab[i] for i in ids)


@pytest.fixture
def tok():
    return tokenizer_for([HAND])


@pytest.mark.parametrize(
    "model,full,trained",
    [
        ("cot", f"{Q} 5 + 3 = << 5 + 3 = 8 >> 8 pens . <nl> 8 * 2 = << 8 * 2 = 1 6 >> 1 6 pens . <nl> "
         "# # # # 1 6 <end>",
         "5 + 3 = << 5 + 3 = 8 >> 8 pens . <nl> 8 * 2 = << 8 * 2 = 1 6 >> 1 6 pens . <nl> # # # # 1 6 <end>"),
        ("decomposer", f"{Q} How many pens after buying ? <nl> How many pens after doubling ? <end>",
         "How many pens after buying ? <nl> How many pens after doubling ? <end>"),
        ("solver", f"{Q} How many pens after buying ? <q> 5 + 3 = << 5 + 3 = 8 >> 8 pens . <nl> "
         "How many pens after doubling ? <q> 8 * 2 = << 8 * 2 = 1 6 >> 1 6 pens . <nl>",
         "5 + 3 = << 5 + 3 = 8 >> 8 pens . <nl> 8 * 2 = << 8 * 2 = 1 6 >> 1 6 pens . <nl>"),
    ],
)  # fmt: skip
def test_formats_of_a_hand_made_problem(tok, model, full, trained):
    ids, on = sequence(tok, HAND, model)
    assert words(tok, ids) == full.replace("# # # #", "####")
    assert words(tok, [i for i, o in zip(ids, on) if o]) == trained.replace("# # # #", "####")
    batch = make_batch(tok, [HAND, HAND], model)
    assert batch.inputs[0, : len(ids) - 1].tolist() == ids[:-1]
    assert batch.targets[0, : len(ids) - 1].tolist() == ids[1:]
    assert words(tok, batch.targets[0][batch.mask[0]].tolist()) == trained.replace("# # # #", "####")


def test_trim_drops_only_padding_columns(tok):
    long = WordProblem(HAND.question, HAND.steps * 2, "32")
    batch = make_batch(tok, [HAND, long], "cot")
    short = trim(batch[:1])
    assert short.inputs.shape[1] == len(sequence(tok, HAND, "cot")[0]) - 1
    assert trim(batch).inputs.shape == batch.inputs.shape


def test_answer_readers():
    assert last_number("8 * 2 = << 8 * 2 = 16 >> 16 pens .") == "16" and last_number("none") is None
    assert cot_answer("5 + 3 = 8\n#### 16 <end>") == "16" and cot_answer("no answer 16") is None
    assert same_number("16.0", "16") and not same_number(None, "16") and not same_number("15", "16")


class LookupLM(nn.Module):
    """A stand-in for a trained model: after any prefix of one of ``sequences`` it predicts that
    sequence's next token (token 0 elsewhere)."""

    def __init__(self, sequences, d_vocab, n_ctx):
        super().__init__()
        self.next = {}
        for s in sequences:
            for t in range(1, len(s)):
                self.next[tuple(s[:t])] = s[t]
        self.d_vocab = d_vocab
        self.cfg = SimpleNamespace(n_ctx=n_ctx)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, tokens):
        B, P = tokens.shape
        logits = torch.zeros(B, P, self.d_vocab)
        for b in range(B):
            row = tokens[b].tolist()
            for t in range(P):
                logits[b, t, self.next.get(tuple(row[: t + 1]), 0)] = 1.0
        return logits


def lookup_models(tok, problems, n_ctx=256):
    return {m: LookupLM([sequence(tok, p, m)[0] for p in problems], len(tok), n_ctx)
            for m in ("cot", "decomposer", "solver")}  # fmt: skip


def test_chained_pipeline_scores_one_with_models_that_know_the_answers():
    problems = generate_problems(12, "test", seed=5)
    tok = tokenizer_for(generate_problems(300, "train"))
    models = lookup_models(tok, problems)
    results, pred = evaluate(
        models, tok, problems, seed=0, batch_size=5, limits=generation_limits(tok, problems)
    )
    assert set(results.method) == {"cot", "decomposer_solver", "oracle_solver", "decomposer"}
    assert sorted(set(results.n_steps)) == [2, 3, 4, 5]
    assert (results.accuracy == 1.0).all() and (results.groupby("method").n.sum() == 12).all()
    chain = pred[pred.method == "decomposer_solver"]
    assert chain.predicted.tolist() == chain.answer.tolist()


def test_a_wrong_decomposer_breaks_the_chain_but_not_the_oracle():
    problems = generate_problems(8, "test", seed=5)
    others = generate_problems(8, "test", seed=6)  # different problems: wrong sub-questions
    tok = tokenizer_for(generate_problems(300, "train"))
    models = lookup_models(tok, problems)
    # the decomposer answers every question with another problem's sub-questions
    prompt_len = lambda p: len(tok.encode(p.question)) + 1  # noqa: E731
    wrong = [
        sequence(tok, p, "decomposer")[0][: prompt_len(p)]
        + sequence(tok, o, "decomposer")[0][prompt_len(o) :]
        for p, o in zip(problems, others)
    ]
    models["decomposer"] = LookupLM(wrong, len(tok), 256)
    subs = decompose(models["decomposer"], tok, problems, batch_size=3)
    assert [len(s) for s in subs] == [o.n_steps for o in others]
    res, _ = evaluate(models, tok, problems, seed=0, batch_size=3, limits=generation_limits(tok, problems))
    acc = res.groupby("method").apply(lambda d: (d.accuracy * d.n).sum() / d.n.sum(), include_groups=False)
    assert acc["oracle_solver"] == 1.0 and acc["cot"] == 1.0
    assert acc["decomposer"] == 0.0 and acc["decomposer_solver"] < 1.0


def test_solver_feeds_its_own_answers_back():
    """The k-th prompt holds the solver's own earlier answers: a solver that knows only the true
    sequences cannot continue after a wrong first answer."""
    problems = generate_problems(4, "test", seed=1, steps=[3])
    tok = tokenizer_for(generate_problems(300, "train"))
    solver = lookup_models(tok, problems)["solver"]
    truth = [[tok.encode(s) for s in p.sub_questions] for p in problems]
    answers = solve(solver, tok, problems, truth, batch_size=2, max_new_tokens=40)
    assert [a[-1] for a in answers] == [tok.encode(p.steps[-1].text) for p in problems]
    # corrupt the solver's memory of the first step of problem 0: after that prefix it knows nothing
    first = sequence(tok, problems[0], "solver")[0]
    cut = len(tok.encode(problems[0].question)) + 1 + len(truth[0][0]) + 1
    del solver.next[tuple(first[:cut])]
    answers = solve(solver, tok, problems, truth, batch_size=2, max_new_tokens=40)
    assert answers[0][0] != tok.encode(problems[0].steps[0].text)
    assert len(answers[0]) == 1  # an unfinished answer ends the chain


def test_tiny_training_runs_every_method_and_reuses_checkpoints(tmp_path):
    cfg = PRESETS["quick"]
    results, pred, training = run_seed(cfg, 0, tmp_path, progress=False)
    assert list(results.columns) == ["method", "n_steps", "accuracy", "seed", "n"]
    assert len(results) == 4 * 4 and results.accuracy.between(0, 1).all()
    assert (results.n == cfg.n_test_per_steps).all()
    assert list(training.model) == ["cot", "decomposer", "solver"]
    assert training.n_params.nunique() == 1 and (training.steps == cfg.steps).all()  # same size, same budget
    states = sorted(tmp_path.glob("*/state.safetensors"))
    assert len(states) == 3
    mtimes = [s.stat().st_mtime_ns for s in states]
    again, _, _ = run_seed(cfg, 0, tmp_path, progress=False)
    assert [s.stat().st_mtime_ns for s in states] == mtimes  # reused, not retrained
    assert again.equals(results)


def test_data_is_split_and_sized():
    data = make_data(PRESETS["quick"], seed=0)
    assert len(data.train) == 64 and len(data.test) == 12
    assert not {p.question for p in data.train} & {p.question for p in data.test}
    assert data.n_ctx > max(len(sequence(data.tokenizer, p, "solver")[0]) for p in data.test)
