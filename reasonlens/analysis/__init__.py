"""Circuit-level analyses of trained models; every function returns a tidy ``pandas.DataFrame``."""

from reasonlens.analysis.attention import attention_matching_scores, attention_patterns
from reasonlens.analysis.attribution import attribution_patching, compare_with_exact
from reasonlens.analysis.circuits import (
    carry,
    diagonal_dominance,
    matching_matrix,
    matching_matrix_tensor,
    matching_matrix_variants,
    matching_scores,
    stream_matching_matrix,
    stream_matching_matrix_tensor,
    stream_queries,
)
from reasonlens.analysis.flow import information_flow
from reasonlens.analysis.knockout import attention_knockout, rank_edges
from reasonlens.analysis.lens import lens_logits, logit_lens, matching_logit_lens
from reasonlens.analysis.ood import (
    embedding_norm_monitor,
    embedding_norms,
    ood_accuracy,
    ood_answers,
    with_ood_rows,
)
from reasonlens.analysis.patching import (
    activation_patching,
    logit_diff,
    matching_counterfactual,
    with_hop_layout,
)
from reasonlens.analysis.path_patching import Receiver, Sender, path_patching

__all__ = [
    "activation_patching", "attention_knockout", "attention_matching_scores", "attention_patterns", "carry",
    "diagonal_dominance", "information_flow", "lens_logits", "logit_diff", "logit_lens",
    "matching_counterfactual", "matching_logit_lens", "rank_edges",
    "matching_matrix", "matching_matrix_tensor", "matching_matrix_variants", "matching_scores",
    "stream_matching_matrix", "stream_matching_matrix_tensor", "stream_queries", "with_hop_layout",
    "embedding_norm_monitor", "embedding_norms", "ood_accuracy", "ood_answers", "with_ood_rows",
    "Receiver", "Sender", "path_patching", "attribution_patching", "compare_with_exact",
]  # fmt: skip
