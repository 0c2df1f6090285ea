"""Plot builders (one per figure kind) and :func:`save_figure` (HTML always, PNG when possible)."""

from reasonlens.plots.attention import attention_figure
from reasonlens.plots.attribution import attribution_figure
from reasonlens.plots.circuits import matching_matrix_figure
from reasonlens.plots.flow import information_flow_figure
from reasonlens.plots.knockout import knockout_figure
from reasonlens.plots.lens import logit_lens_figure
from reasonlens.plots.ood import ood_figure
from reasonlens.plots.patching import patching_figure
from reasonlens.plots.path_patching import path_patching_figure
from reasonlens.plots.probes import probe_figure
from reasonlens.plots.save import save_figure, static_export_available
from reasonlens.plots.scratchpad import intermediate_probe_figure, length_accuracy_figure

__all__ = [
    "attention_figure", "information_flow_figure", "intermediate_probe_figure", "knockout_figure",
    "length_accuracy_figure", "logit_lens_figure",
    "matching_matrix_figure", "ood_figure", "patching_figure", "probe_figure", "save_figure",
    "static_export_available", "attribution_figure", "path_patching_figure",
]  # fmt: skip
