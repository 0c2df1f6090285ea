"""Checked checkpoints: a flipped byte, a truncated file, an edited config or a foreign file each
raise one CheckpointError naming the file and the problem; stale temp files are cleaned."""

import json
import os
import struct

import pytest
import torch

from reasonlens.checkpoints import CheckpointError, clean_stale_temps, read_safetensors, tensors_sha256
from reasonlens.models import Transformer
from tests.conftest import tiny_config


@pytest.fixture
def saved(tmp_path):
    model = Transformer(tiny_config())
    path = model.save(tmp_path / "m.safetensors")
    return model, path


def _header_len(path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_round_trip_verifies(saved):
    model, path = saved
    back = Transformer.load(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])


def test_flipped_byte_is_corrupted(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[8 + _header_len(path) + 100] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"m\.safetensors: corrupted: .*SHA-256 differs"):
        Transformer.load(path)
    read_safetensors(path, verify=False)  # the file itself still parses


def test_truncated(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=r"m\.safetensors: not a safetensors model file"):
        Transformer.load(path)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.safetensors: not a safetensors"):
        Transformer.load(path)


def _rewrite_header(path, edit):
    raw = path.read_bytes()
    n = _header_len(path)
    head = json.loads(raw[8 : 8 + n])
    edit(head["__metadata__"])
    new = json.dumps(head).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def test_config_unreadable(saved):
    _, path = saved
    _rewrite_header(path, lambda m: m.update(config="{not json"))
    with pytest.raises(CheckpointError, match="m.safetensors: config unreadable"):
        Transformer.load(path)
    _rewrite_header(path, lambda m: m.pop("config"))
    with pytest.raises(CheckpointError, match="config unreadable .*KeyError"):
        Transformer.load(path)


def test_shape_mismatch_with_own_config(saved):
    _, path = saved

    def widen(m):
        cfg = json.loads(m["config"])
        cfg["d_mlp"] = 128
        m["config"] = json.dumps(cfg)

    _rewrite_header(path, widen)
    with pytest.raises(CheckpointError, match="shape mismatch with its own config"):
        Transformer.load(path)


def test_missing_file_is_also_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        Transformer.load(tmp_path / "absent.safetensors")


def test_hash_covers_names_dtypes_and_values():
    a = {"x": torch.zeros(3), "y": torch.ones(2, dtype=torch.bfloat16)}
    assert tensors_sha256(a) == tensors_sha256(dict(a))
    assert tensors_sha256(a) != tensors_sha256({"x": torch.zeros(3), "z": a["y"]})
    assert tensors_sha256(a) != tensors_sha256({**a, "x": torch.zeros(3, dtype=torch.float64)})
    assert tensors_sha256(a) != tensors_sha256({**a, "x": torch.tensor([0.0, 0.0, 1e-30])})


def test_stale_temp_of_dead_writer_is_removed(tmp_path, saved):
    model, path = saved
    dead = 2**22 + 12345  # beyond any pid_max in use here
    stale = path.with_name(f".{path.name}.{dead}.tmp")
    stale.write_bytes(b"x" * 10)
    live = path.with_name(f".{path.name}.{os.getppid()}.tmp")
    live.write_bytes(b"x")
    other = path.with_name(f".other.safetensors.{dead}.tmp")
    other.write_bytes(b"x")
    model.save(path)
    assert not stale.exists() and live.exists() and other.exists()
    assert clean_stale_temps(path) == []


# -- silent wrong results of the model API ------------------------------------------------------
def test_out_of_range_token_is_named():
    model = Transformer(tiny_config())  # d_vocab 50
    tokens = torch.tensor([[1, 2, 3], [4, 57, 5]])
    with pytest.raises(ValueError, match=r"token 57 at \[1, 1\] is outside the model's vocabulary of 50"):
        model(tokens)
    with pytest.raises(ValueError, match="token -1"):
        model(torch.tensor([[-1, 0]]))


def test_names_filter_matching_nothing_raises():
    model = Transformer(tiny_config())
    tokens = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="no hook named 'blocks.9.hook_resid_pre'"):
        model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_pre", "blocks.9.hook_resid_pre"])
    with pytest.raises(ValueError, match="matches none"):
        model.run_with_cache(tokens, names_filter=lambda n: n.endswith("nothing"))
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_pre")
    assert list(cache.keys()) == ["blocks.0.hook_resid_pre"]


def test_gamma_that_underflows_is_refused():
    with pytest.raises(ValueError, match=r"gamma=30.*all be 0"):
        tiny_config(gamma=30.0)
    tiny_config(gamma=5.0)  # small but representable
