"""How fast ``--help`` answers, against the cost of the heavy imports it now avoids.

For every script under experiments/ and benchmarks/, the wall time of ``python SCRIPT --help``,
divided by the time of ``python -c "import reasonlens.models"`` (torch + TransformerLens) measured
in the same run. A ratio well under 1 means --help no longer waits for those imports; the target is
<= 0.25 for every script that parses before importing (a script at ~1 still imports first).

    python benchmarks/help_speed.py            # last line: one JSON object
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from reasonlens import cli

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.prepare(p)
    p.add_argument("--repeats", type=cli.positive_int, default=1, help="runs per command (min is kept)")
    args = p.parse_args(argv)
    heavy = min(wall([sys.executable, "-c", "import reasonlens.models"]) for _ in range(args.repeats))
    scripts = sorted((ROOT / "experiments").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    ratios = {}
    for s in scripts:
        t = min(wall([sys.executable, str(s), "--help"]) for _ in range(args.repeats))
        ratios[f"{s.parent.name}/{s.name}"] = round(t / heavy, 3)
        print(f"{s.parent.name}/{s.name:28s} --help {t:6.2f} s  ratio {t / heavy:5.2f}", flush=True)
    print(json.dumps({"heavy_import_s": round(heavy, 2), "help_over_heavy_import": ratios,
                      "all_at_most_0.25": all(r <= 0.25 for r in ratios.values())}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
