"""analyse_matching_model runs in evaluation mode and gives every module its mode back."""

from reasonlens.analysis.mechanism import MechanismConfig, analyse_matching_model
from reasonlens.models import ModelConfig, Transformer
from reasonlens.tasks import matching


def test_analysis_restores_training_mode():
    cfg = ModelConfig(
        n_layers=3, d_model=16, d_mlp=32, n_ctx=13, d_vocab=matching.vocab_size("single_chain", 13),
        norm="post", seed=1,
    )  # fmt: skip
    model = Transformer(cfg)
    model.train()
    model.blocks[1].eval()  # a mixed state comes back as it was
    before = {name: m.training for name, m in model.named_modules()}
    tables = analyse_matching_model(
        model, MechanismConfig(n_examples=200, n_patching=20, n_eval=50, n_path=10)
    )
    assert {name: m.training for name, m in model.named_modules()} == before
    assert {"path_patching", "attribution", "patching"} <= tables.keys()
    assert (tables["path_patching"].n_examples == 10).all()
    assert tables["attribution"].effect_exact.abs().max() > 0
