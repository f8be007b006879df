"""``prepare-data``: decode a real archive once into the per-institution ``.npy`` cache and report it.

    python -m uml_fed.data.prepare experiment=bigearthnet_bimodal_full data.root=/data/BigEarthNet
    uml-fed prepare-data <the same Hydra overrides>

Prints, per institution and split, the class counts, the cache folder and size, and every patch
that ``data.skip_unreadable=true`` skipped; the report is also written as
``<cache_dir>/<source>/prepare_report.json``.  Caches that are already fresh are reused.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

from .core import SPLITS, DataError
from .sources.archive import RealSource, build_real, cache_root
from .specs import catalog, data_specs

if TYPE_CHECKING:
    from ..config import Config


def prepare_data(cfg: Config, force: bool = False, only: str | None = None, echo: bool = True) -> dict[str, Any]:
    """Build (or validate and reuse) the cache of every institution of ``cfg.data``; returns the report."""
    d = cfg.data
    source = catalog(d)
    if not isinstance(source, RealSource):
        raise DataError(f"prepare-data decodes archives; data.source={d.source} is generated and needs no preparation")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, report = build_real(d, cfg.seed, data_specs(d), only=only, force=force, load=False)
    report["warnings"] = [str(w.message) for w in caught]
    for w in caught:  # recorded for the report, still shown to the user
        warnings.warn(w.message, w.category, stacklevel=2)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    report["skipped_total"] = sum(len(r["skipped"]) for r in report["institutions"].values())
    path = cache_root(d, source) / d.source / "prepare_report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    report["report_file"] = str(path)
    if echo:
        print(format_report(report))
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"source {report['source']}  root {report['root']}  scan {report.get('scan', '?')}"]
    if report.get("excluded"):
        lines.append("excluded scenes: " + ", ".join(f"{k}={v}" for k, v in report["excluded"].items()))
    if report.get("scan_counts"):
        lines.append("scan: " + ", ".join(f"{k}={v}" for k, v in report["scan_counts"].items()))
    classes = report.get("classes", [])
    for name, r in report["institutions"].items():
        lines.append(
            f"{name}: cache {r['cache']} ({r['cache_bytes'] / 2**20:.1f} MiB, {r['seconds']:.1f} s) {r['cache_dir']}"
        )
        for s in SPLITS:
            counts = r["counts"][s]
            lines.append(f"  {s:5s} n={sum(counts.values()):6d}  " + "  ".join(f"{c}: {counts[c]}" for c in classes))
        if r["skipped"]:
            lines.append(
                f"  skipped {len(r['skipped'])} unreadable patch(es): " + ", ".join(x["id"] for x in r["skipped"])
            )
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    lines.append(f"skipped unreadable patches in total: {report.get('skipped_total', 0)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from ..config import load_config

    args = list(sys.argv[1:] if argv is None else argv)
    force = "--force" in args
    args = [a for a in args if a != "--force"]
    try:
        prepare_data(load_config(args), force=force)
    except (DataError, FileNotFoundError) as e:  # user input: the message is the remedy, no traceback
        sys.exit(f"prepare-data: {e}")


if __name__ == "__main__":
    main()
