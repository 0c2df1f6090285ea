"""reasonlens.names (stdlib-only, read at parse time) agrees with the heavy modules it serves."""

import subprocess
import sys

from reasonlens import names


def test_names_module_is_light():
    code = (
        "import sys, reasonlens.names; "
        "print(sorted(m for m in ('torch', 'transformer_lens', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_icot_names_agree():
    from reasonlens.icot import pipeline, stages

    assert stages.STAGES == names.ICOT_STAGES
    assert stages.METHOD_STAGES == names.ICOT_METHOD_STAGES
    assert pipeline.ALL_STAGES == stages.STAGES + stages.METHOD_STAGES == names.ICOT_ALL_STAGES
    assert tuple(pipeline.RESULT_METHODS) == names.ICOT_RESULT_METHODS
    assert pipeline.parse_stage_steps is names.parse_stage_steps


def test_noise_names_agree():
    import typing

    from reasonlens.models import config

    assert config.NOISES == names.NOISES == typing.get_args(config.Noise)
