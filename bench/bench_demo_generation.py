"""How fast the synthetic demo cohort is written: CPU seconds per slide and time to the first slide.

Compares the generator of this checkout ("after") with the one of an earlier commit ("before",
default 2952ddd, the commit before the generator was vectorised), checked out with
``git worktree`` into a temporary folder, in the same run and at the same load:

1. CPU seconds per slide: ``write_slide`` of the same default-size slides (the first
   ``--slides`` of seed 0's layout, 6144 px wide at 0.5 µm/px) in one process each, measured
   with ``time.process_time`` (imports and planning not counted; the runs alternate before,
   after, before, after ... so a load change hits both).
2. A fresh first start: ``make_demo_cohort`` of the default cohort (24 slides, 2 worker
   processes on this machine) into an empty folder, from a fresh interpreter: seconds to the
   first slide written (from the process start, imports included) and to the whole cohort,
   and which slide came first.

Prints the load average (``os.getloadavg()``) before and after each part: the machine is shared.

    python bench/bench_demo_generation.py [--before 2952ddd] [--slides 4] [--no-cohort]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PER_SLIDE = r"""
import json, sys, time
from pathlib import Path
from core.demo import cohort_layout, plan_slide, write_slide
index, out = int(sys.argv[1]), Path(sys.argv[2])
name, label, split = cohort_layout(24, 0)[index]
plan = plan_slide(name, label, split, 6144, (0, index))
cpu, wall = time.process_time(), time.perf_counter()
write_slide(plan, out / f"{name}.tiff")
print(json.dumps({"slide": name, "label": label, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}))
"""

FIRST_START = r"""
import time
started = time.perf_counter()
import json, sys
from pathlib import Path
from core.demo import make_demo_cohort
first = {}
def on_slide(name):
    if not first:
        first.update(slide=name, first_s=time.perf_counter() - started)
make_demo_cohort(Path(sys.argv[1]), on_slide=on_slide)
print(json.dumps({**first, "cohort_s": time.perf_counter() - started}))
"""


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run(tree: Path, script: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="2952ddd", help="commit of the 'before' generator")
    parser.add_argument("--slides", type=int, default=4, help="slides timed one by one (seed 0's first ones)")
    parser.add_argument("--no-cohort", action="store_true", help="skip the fresh first start of the whole cohort")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}; {load()}")
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        tmp = Path(tmp)
        before = tmp / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before], check=True, capture_output=True)
        try:
            trees = {"before": before, "after": ROOT}
            cpu: dict[str, list[float]] = {"before": [], "after": []}
            for index in range(args.slides):
                for which, tree in trees.items():
                    out = tmp / f"{which}-slides"
                    out.mkdir(exist_ok=True)
                    result = run(tree, PER_SLIDE, str(index), str(out))
                    cpu[which].append(result["cpu_s"])
                    print(f"  {which:6s} {result['slide']} ({result['label']:6s}): {result['cpu_s']:.2f} CPU-s, {result['wall_s']:.2f} s wall; {load()}")
            for which in trees:
                print(f"{which}: {sum(cpu[which]) / len(cpu[which]):.2f} CPU-s per slide (mean of {len(cpu[which])})")
            print(f"speed-up: {sum(cpu['before']) / sum(cpu['after']):.2f}x")
            if not args.no_cohort:
                for which, tree in trees.items():
                    print(f"{which}: fresh first start of the default cohort; {load()}")
                    result = run(tree, FIRST_START, str(tmp / f"{which}-cohort"))
                    print(
                        f"  first slide written ({result['slide']}) {result['first_s']:.1f} s after the process started, "
                        f"whole cohort {result['cohort_s']:.1f} s; {load()}"
                    )
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False, capture_output=True)


if __name__ == "__main__":
    main()
