"""Write output files all or nothing: the file-based commands' "nothing half-written" rule."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_on_success(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; it replaces `out` only if the block completes.

    On any error the temporary file is removed and `out` keeps its previous content.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
