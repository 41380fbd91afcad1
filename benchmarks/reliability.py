"""Failure drills at full size: every drill of tests/drills, each in a temporary folder of its own,
written to reports/reliability.json (what was injected, what happened, what was lost).

    python benchmarks/reliability.py                    # every drill, full size
    python benchmarks/reliability.py --only bad_lines   # one drill (others kept from the last file)
    python benchmarks/reliability.py --light            # the sizes `make test` uses

The drills themselves live in tests/drills (one module each, ``run(workdir, light) -> dict``);
``make test`` runs their light form. Exit status 1 when any drill lost something.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> module; a module's docstring says what it injects.
DRILLS = {
    "kill9": "tests.drills.kill9",
    "servers": "tests.drills.servers",
    "disk_full": "tests.drills.disk_full",
    "bad_lines": "tests.drills.bad_lines",
    "env_sessions": "tests.drills.env_sessions",
    "service_reload": "tests.drills.service_reload",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(DRILLS), help="run these drills only")
    ap.add_argument("--light", action="store_true", help="the small sizes make test uses")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "reliability.json")
    args = ap.parse_args()

    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report.setdefault("drills", {})
    failed = []
    for name in args.only or list(DRILLS):
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"drill-{name}-") as tmp:
            try:
                result = importlib.import_module(DRILLS[name]).run(Path(tmp), light=args.light)
            except Exception as exc:  # a drill that crashes is a failed drill, reported as such
                result = {"injected": "?", "happened": f"the drill itself failed: {exc!r}", "lost": "unknown",
                          "passed": False, "traceback": traceback.format_exc()}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result["light"] = args.light
        report["drills"][name] = result
        print(json.dumps({k: v for k, v in result.items() if k != "traceback"}, indent=2), flush=True)
        if not result.get("passed"):
            failed.append(name)
    report["machine"] = {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                         "platform": platform.platform()}
    report["written"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    tmp_out.replace(args.out)
    print(f"wrote {args.out}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
