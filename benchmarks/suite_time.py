"""How long the README's test command takes: the whole suite and the quick run, timed as a user runs them.

Runs ``python -m pytest tests`` (everything, the README's command) and ``python -m pytest -m "not slow"
tests`` (the quick run) from the repository root, each in a fresh process, and records the wall time,
pytest's summary line and the load average before and after. The README and the getting-started page
quote the result (``summary``).

    python benchmarks/suite_time.py
    python benchmarks/suite_time.py --quick --output /tmp/bench_check
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import harness

RUNS = {"whole suite": ["tests"], "quick run": ["-m", "not slow", "tests"]}


def run(args: list[str], env: dict) -> dict:
    """One pytest run from the repository root -> wall [s], exit status, pytest's last summary line."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    load = harness.load_average()
    with harness.timed() as t:
        proc = subprocess.run(cmd, cwd=os.path.dirname(harness.HERE), env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    return dict(command=" ".join(["python", "-m", "pytest", *args]), wall_s=t["wall_s"], status=proc.returncode,
                summary=lines[-1].strip("= ") if lines else "", load_average_before=load,
                load_average_after=harness.load_average())


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(round(seconds % 60))} s"


def main() -> None:
    """Time both runs, write ``suite_time.json``."""
    ap = harness.parser(__doc__)
    args = ap.parse_args()
    env = dict(os.environ)
    if args.threads > 0:
        env.update({v: str(args.threads) for v in harness.THREAD_VARS})
    runs = {}
    for name, pytest_args in RUNS.items():
        if args.quick:  # checks the script: one small test file
            pytest_args = ["tests/test_features.py"]
        harness.log(f"pytest: {name}")
        runs[name] = run(pytest_args, env)
    whole, quick = runs["whole suite"], runs["quick run"]
    summary = (f"`python -m pytest tests` took {minutes(whole['wall_s'])} ({whole['summary']}) and the quick run "
               f"{minutes(quick['wall_s'])} on {harness.machine()}, load average {whole['load_average_before'][0]}"
               " at the start")
    rows = [[name, r["command"], minutes(r["wall_s"]), r["summary"], r["status"]] for name, r in runs.items()]
    harness.write_result("suite_time", "The test suite's running time", [harness.table(
        "pytest, as the README runs it", ["run", "command", "wall", "pytest", "exit status"], rows,
        "Each run in a fresh process from the repository root; wall time includes collection.")],
        dict(runs=runs, quick=args.quick), args.output, summary=summary)


if __name__ == "__main__":
    main()
