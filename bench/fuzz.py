"""Fuzzing every parser of outside input: each property for N examples, a table of the results.

The properties are the suite's own (tests/fuzz/properties.py: the VRRP codec and keepalived.conf;
tests/fuzz/inputs.py: broker payloads, the YAML config, REST and peer bodies, Modbus replies),
run here at a fuzzing count instead of the suite's few hundred. A property passes when every
example gave its typed result or its documented error; the first counterexample is printed.

Usage: ``.venv/bin/python -m bench.fuzz [--examples 100000] [--only NAME,...]``
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ and tests/ are importable from the root
    sys.path.insert(0, str(ROOT))

from bench.report import table, write_json  # noqa: E402
from tests.fuzz.inputs import INPUT_PROPERTIES  # noqa: E402
from tests.fuzz.properties import PROPERTIES, Property  # noqa: E402

ALL: tuple[Property, ...] = (*PROPERTIES, *INPUT_PROPERTIES)


def run(prop: Property, examples: int) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        prop(examples)
        failure = None
    except Exception:  # a counterexample: hypothesis raises what the property raised
        failure = traceback.format_exc(limit=3)[-1500:]
    seconds = time.perf_counter() - started
    return {
        "property": prop.__name__,
        "examples": examples,
        "seconds": round(seconds, 1),
        "per_second": round(examples / seconds) if seconds > 0 else None,
        "passed": failure is None,
        "failure": failure,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--only", default="", help="comma-separated property names")
    parser.add_argument("--output", default="fuzz", help="results/<output>.json")
    args = parser.parse_args(argv)
    wanted = {n for n in args.only.split(",") if n}
    chosen = [p for p in ALL if not wanted or p.__name__ in wanted]
    results = []
    for prop in chosen:
        print(f"{prop.__name__}: {args.examples:,} examples ...", file=sys.stderr, flush=True)
        results.append(run(prop, args.examples))
        if results[-1]["failure"]:
            print(results[-1]["failure"], file=sys.stderr)
    rows = [
        [
            r["property"],
            f"{r['examples']:,}",
            r["seconds"],
            r["per_second"],
            "pass" if r["passed"] else "FAIL",
        ]
        for r in results
    ]
    columns = ("property", "examples", "seconds", "examples/s", "result")
    print(table("Fuzzing the parsers of outside input", columns, rows))
    path = write_json(args.output, {"config": {"examples": args.examples}, "results": results})
    print(f"\nwrote {path}")
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
