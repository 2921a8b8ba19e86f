"""Summarise the ledgers that the fault tests wrote (CHAOS_REPORT): `make chaos` prints this.

The last line is one JSON object: submitted, completed (reached COMPLETED, successfully or with
the error the fault calls for), succeeded, failed, lost, duplicated, p99_recovery_s, faults.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def summarise(lines: list[dict[str, Any]]) -> dict[str, Any]:
    recovery = [float(v) for line in lines for v in line["recovery_s"]]
    succeeded = sum(line["completed"] for line in lines)
    failed = sum(line["failed"] for line in lines)
    return {
        "submitted": sum(line["submitted"] for line in lines),
        "completed": succeeded + failed,
        "succeeded": succeeded,
        "failed": failed,
        "lost": sum(line["lost"] for line in lines),
        "duplicated": sum(line["duplicated"] for line in lines),
        "p99_recovery_s": round(p99(recovery), 2),
        "faults": len(recovery),
    }


def main(path: str) -> int:
    report = Path(path)
    lines = (
        [json.loads(text) for text in report.read_text().splitlines() if text.strip()]
        if report.exists()
        else []
    )
    for line in lines:
        recovery = ", ".join(f"{v:.1f}" for v in line["recovery_s"]) or "-"
        print(
            f"{line['fault']:<28} submitted {line['submitted']:>3}  ok {line['completed']:>3}  "
            f"failed {line['failed']:>2}  lost {line['lost']}  duplicated {line['duplicated']}  "
            f"recovery s: {recovery}"
        )
    print(json.dumps(summarise(lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "var/chaos.jsonl"))
