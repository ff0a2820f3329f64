"""What one config edit costs the node at 100, 1,000 and 10,000 tags: the pure pipeline.

Per tag count (10 devices, 10 groups each, the tags spread over them, a comment on every tag):
parse the file round trip (ruamel.yaml, comments kept), change one tag, write the YAML back in
the file's own indentation, and check the result by the loader's own rules. "first edit" parses
the file; "next edit" reuses the document of the previous change (the editor does while the file
is what it wrote). Also: the diff's size (it must show the edit only) and the tag CSV of one
group of the largest size exported and parsed.

The node adds to this its apply (config sync validates again and reconfigures the hub) and the
version files. A file under 64 KiB is edited in a thread with its document kept ("next edit");
a larger one in a worker process at nice 10, parsed every time ("first edit"), off the loop.

Usage: ``.venv/bin/python -m bench.config_edit [--tags 100,1000,10000]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ is importable from the root
    sys.path.insert(0, str(ROOT))

from bench.report import table, write_json  # noqa: E402
from tandem.config import edit  # noqa: E402
from tandem.config.edit import Scope  # noqa: E402
from tandem.config.tagcsv import export_csv, parse_csv  # noqa: E402

DEVICES, GROUPS = 10, 10


def config_text(tags: int) -> str:
    per_group = max(1, tags // (DEVICES * GROUPS))
    lines = ["# bench config", "node: bench", "data_dir: /tmp/bench-config-edit", "devices:"]
    for d in range(DEVICES):
        lines += [f"  - name: plc{d}  # device {d}", f"    host: 10.0.0.{d + 1}", "    groups:"]
        for g in range(GROUPS):
            lines += [f"      - name: g{g}", "        interval: 1", "        tags:"]
            for t in range(per_group):
                address = g * per_group + t
                lines += [f"          - name: t{t}  # tag {t}", f"            address: {address}"]
    return "\n".join(lines) + "\n"


def measure(tags: int) -> dict[str, Any]:
    text = config_text(tags)
    at = 4 * max(1, tags // (DEVICES * GROUPS))  # where plc3/g4/t0 is
    started = time.perf_counter()
    doc = edit.load_doc(text)
    parsed = time.perf_counter()
    path = edit.replace(
        doc, Scope.of("plc3", "g4", "t0"), {"name": "t0", "address": at, "scale": 2.0}
    )
    out = edit.dump_doc(doc, text)
    dumped = time.perf_counter()
    edit.checked(out, path)
    checked = time.perf_counter()
    edit.replace(doc, Scope.of("plc3", "g4", "t0"), {"name": "t0", "address": at, "scale": 3.0})
    again = edit.dump_doc(doc, out)
    edit.checked(again, path)
    next_done = time.perf_counter()
    diff = edit.unified(text, out, "before", "after")
    return {
        "tags": DEVICES * GROUPS * max(1, tags // (DEVICES * GROUPS)),
        "file_kib": round(len(text.encode()) / 1024, 1),
        "parse_s": round(parsed - started, 3),
        "edit_dump_s": round(dumped - parsed, 3),
        "check_s": round(checked - dumped, 3),
        "first_edit_s": round(checked - started, 3),
        "next_edit_s": round(next_done - checked, 3),
        "diff_lines": len(diff.splitlines()),
    }


def csv_round_trip(tags: int) -> dict[str, Any]:
    rows = [{"name": f"t{i}", "address": i, "scale": 0.1} for i in range(tags)]
    started = time.perf_counter()
    text = export_csv("modbus-tcp", rows)
    exported = time.perf_counter()
    parsed = parse_csv("modbus-tcp", text)
    done = time.perf_counter()
    assert [r.tag for r in parsed] == rows
    return {
        "rows": tags,
        "export_s": round(exported - started, 3),
        "parse_s": round(done - exported, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", default="100,1000,10000")
    opts = parser.parse_args()
    counts = [int(n) for n in opts.tags.split(",")]
    results = [measure(n) for n in counts]
    csv = csv_round_trip(max(counts))
    columns = list(results[0])
    print(
        table(
            "one config edit (pure pipeline)", columns, [[r[c] for c in columns] for r in results]
        )
    )
    print(table("tag CSV of one group", list(csv), [list(csv.values())]))
    path = write_json("config_edit", {"edits": results, "csv": csv})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
