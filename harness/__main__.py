"""``python -m harness <command>``: the tools that work on results outside pytest.

    python -m harness compare A B          gate B against A (results folders or baseline files); exit 1 on regression
    python -m harness summary DIR          rebuild summary.json/.md/.html of a results folder and print summary.md
    python -m harness baseline DIR FILE    write (or update) a baseline file from a results folder's passed records
    python -m harness tables DIR --into F  regenerate the tables of committed results folders in F (BENCHMARKS.md);
                                           --check: exit 1 when F is out of date

Exit codes: 0 fine, 1 a regression (compare) or a stale document (tables --check), 2 a usage error (one line).
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command == "compare":
        from harness.reporting.compare import main as run
    elif command == "summary":
        from harness.reporting.summary import main as run
    elif command == "baseline":
        from harness.reporting.promote import main as run
    elif command == "tables":
        from harness.reporting.publish import main as run
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 0 if command in ("-h", "--help") else 2
    return run(rest)


if __name__ == "__main__":
    raise SystemExit(main())
