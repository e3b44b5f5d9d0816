"""Commands on the stores themselves: `capacity backup`, `restore`, `dictionary`.

A backup holds the warehouse and the SRE decisions as consistent byte copies (schema, the
`COMMENT ON` documentation and every row), with a manifest of checksums; a restore checks the
manifest and puts each file back by rename under the writer lock.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from capacity_pipelines import warehouse as wh
from capacity_pipelines.common import paths


def _stores() -> dict[str, Path]:
    return {"warehouse": paths.warehouse_path(), "decisions": paths.decisions_path()}


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the warehouse and the SRE decisions into a new folder (default: a dated one)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(args.to) if args.to else paths.capacity_home() / "backups" / stamp
    if folder.exists():
        raise FileExistsError(f"{folder}: already exists; a backup goes into a new folder")
    written = wh.backup(_stores(), folder)
    for item in written:
        print(f"{item.role:<10} {item.size / 2**20:8.1f} MiB  sha256 {item.sha256[:12]}")
    absent = set(_stores()) - {w.role for w in written}
    for role in sorted(absent):
        print(f"{role:<10} (none yet: {_stores()[role]} does not exist)")
    print(f"Backup: {folder}")
    print(f"Restore it with: capacity restore --from {folder}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Put a backup's files back in place (the warehouse, the decisions, or both)."""
    targets = {role: path for role, path in _stores().items() if role in args.only}
    restored = wh.restore(Path(args.source), targets)
    if not restored:
        print(f"{args.source}: holds none of {', '.join(sorted(targets))}; nothing restored")
        return 1
    for role in restored:
        print(f"restored {role}: {targets[role]}")
    print("Republish the analysts' snapshot with the next run (or `capacity run`).")
    return 0


def cmd_dictionary(args: argparse.Namespace) -> int:
    """Write the warehouse data dictionary (Markdown): extracted and derived tables."""
    from capacity_pipelines.ingest.catalog import load_catalog
    from capacity_pipelines.reporting.dictionary import warehouse_dictionary

    text = warehouse_dictionary(load_catalog(args.catalog))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `backup`, `restore` and `dictionary`."""
    backup = sub.add_parser("backup", help="copy the warehouse and the SRE decisions")
    backup.add_argument("--to", help="new folder (default: CAPACITY_HOME/backups/<UTC time>)")
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser("restore", help="put a backup back in place")
    restore.add_argument("--from", dest="source", required=True, help="backup folder")
    restore.add_argument(
        "--only",
        nargs="+",
        choices=["warehouse", "decisions"],
        default=["warehouse", "decisions"],
        help="restore only these (default: both)",
    )
    restore.set_defaults(func=cmd_restore)

    dictionary = sub.add_parser("dictionary", help="write the warehouse data dictionary")
    dictionary.add_argument("--catalog", default=None, help="metric catalog YAML")
    dictionary.add_argument("--out", default=str(paths.REPO_ROOT / "docs" / "warehouse.md"))
    dictionary.set_defaults(func=cmd_dictionary)
