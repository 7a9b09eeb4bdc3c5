"""The report: a JSON file (whole, written to a temp name and renamed) and a printed table."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from llama.errors import UserError

# Which way is better, for the table (FAD and KL are distances).
LOWER_IS_BETTER = {"fad", "kl"}


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def table(reports: dict[str, dict]) -> str:
    """One row per metric, one column per report (e.g. trained | random)."""
    names = list(reports)
    metrics = list(dict.fromkeys(k for r in reports.values() for k in r.get("metrics", {})))
    unavailable = dict.fromkeys(k for r in reports.values() for k in r.get("unavailable", {}))
    rows = [["metric", *names]]
    for k in metrics:
        arrow = " (lower better)" if k in LOWER_IS_BETTER else ""
        rows.append([k + arrow, *[_fmt(r.get("metrics", {}).get(k, "-")) for r in reports.values()]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for k in unavailable:
        if k not in metrics:
            reason = next(r["unavailable"][k] for r in reports.values() if k in r.get("unavailable", {}))
            lines.append(f"{k}: unavailable: {reason}")
    for name, r in reports.items():
        for what, items in r.get("skipped", {}).items():
            if items:
                shown = list(items)[:5]
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                lines.append(f"{name}: skipped {len(items)} {what.replace('_', ' ')}: {', '.join(map(str, shown))}{more}")
    return "\n".join(lines)


def write_json(path: str | Path, report: dict) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mumu-tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"{path}: cannot write the report ({e.strerror or type(e).__name__})") from None
    return path
