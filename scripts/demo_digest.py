"""The demo's results.json and report.md, by SHA-256: a refactor must leave them byte-identical.

    python scripts/demo_digest.py                      # run the demo into a temp folder, print the digests
    python scripts/demo_digest.py --check docs/demo_digest.json   # ... and compare with a recorded run

The record names the commit and the machine it was made on: float results are bit-exact for one torch build on
one CPU family (the BLAS kernels differ across families), so compare on the machine that recorded it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

FILES = ("results.json", "report.md")


def digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=Path, help="a recorded digest file to compare with")
    parser.add_argument("--out", type=Path, help="run folder (default: a temporary one); an existing run is re-used")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "demo"
        subprocess.run([sys.executable, "-m", "stardomain.cli", "-q", "demo", "--out", str(out)], check=True)
        got = digests(out)
    import torch

    print(json.dumps({**got, "torch": torch.__version__, "machine": platform.processor() or platform.machine()}, indent=2))
    if args.check is None:
        return 0
    want = json.loads(args.check.read_text())
    same = all(got[name] == want[name] for name in FILES)
    print(f"{'byte-identical to' if same else 'DIFFERENT from'} the demo of commit {want['commit']} ({args.check})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
