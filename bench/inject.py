"""`python -m bench.inject`: `mesher-injector inject -f` on a stream of 5,000 Deployments
that all ask for the sidecar, against the floor of a bare PyYAML round trip of the same
file with libyaml (C loader and dumper), both as processes, in one run.

The goal (issue 22): inject within 4x the round trip. Injecting writes each Deployment
anew with its sidecar, so its output is about four times its input.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.helpers import MANIFESTS

DEPLOYMENTS = 5000
RUNS = 3
ROUND_TRIP = (
    "import sys, yaml\n"
    "docs = list(yaml.load_all(open(sys.argv[1]).read(), Loader=yaml.CSafeLoader))\n"
    "open(sys.argv[2], 'w').write(yaml.dump_all(docs, Dumper=yaml.CSafeDumper, sort_keys=False))\n"
)


def stream(count: int = DEPLOYMENTS) -> str:
    """`count` Deployments like tests/support/manifests/deployment.yaml, each its own name."""
    one = (MANIFESTS / "deployment.yaml").read_text()
    return "---\n".join(one.replace("server-mesher", f"server-{n:05d}") for n in range(count))


def seconds(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "in.yaml", Path(tmp) / "out.yaml"
        source.write_text(stream())
        inject = [sys.executable, "-m", "injector", "inject", "-f", str(source), "-o", str(out)]
        floor = [sys.executable, "-c", ROUND_TRIP, str(source), str(out)]
        injects, floors = [], []
        for _ in range(RUNS):  # interleaved, so a noisy moment hits both
            floors.append(seconds(floor))
            injects.append(seconds(inject))
            size = out.stat().st_size
        a, b = statistics.median(injects), statistics.median(floors)
        print(
            f"`inject -f` on {DEPLOYMENTS:,} Deployments ({source.stat().st_size / 1e6:.1f} MB in, "
        )
        print(f"{size / 1e6:.1f} MB out), median of {RUNS}, processes started included:\n")
        print("| command | seconds | ratio to the round trip |")
        print("|---|---|---|")
        print(f"| PyYAML libyaml load + dump round trip | {b:.2f} | 1.00 |")
        print(f"| mesher-injector inject -f | {a:.2f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
