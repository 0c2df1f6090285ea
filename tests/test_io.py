"""reasonlens.io: atomic text writes clean up temp files that killed writers left behind."""

import os

from reasonlens.io import atomic_write_text, clean_stale_temps, write_json


def test_atomic_write_removes_stale_temps_of_the_same_target(tmp_path):
    path = tmp_path / "results.csv"
    dead = 2**22 + 12345  # beyond any pid_max in use here
    stale = path.with_name(f".{path.name}.{dead}.tmp")
    stale.write_text("half a file")
    live = path.with_name(f".{path.name}.{os.getppid()}.tmp")  # a writer still running
    live.write_text("x")
    other = tmp_path / f".other.csv.{dead}.tmp"  # another target's
    other.write_text("x")
    atomic_write_text(path, "a,b\n1,2\n")
    assert path.read_text() == "a,b\n1,2\n"
    assert not stale.exists() and live.exists() and other.exists()
    assert clean_stale_temps(path) == []
    write_json({"x": 1}, tmp_path / "m.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["results.csv", "m.json", live.name, other.name]
    )


def test_io_is_light():
    import subprocess
    import sys

    code = "import sys, reasonlens.io; print('pandas' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
