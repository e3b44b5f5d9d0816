"""The paths a file command is given, checked before any work.

DESIGN.md: a bad request ends with one line naming the path and the problem, exit code 2, and
nothing written. So before any work: an output that would overwrite an input through whatever
spelling, symlink or hard link; a file an output folder would receive that is an input or the
other output; a folder given where a file is expected and the reverse; a parent folder that
cannot be created or written. A write that still fails (a full disk) is reported naming the
path (`writing`).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl


class PathError(ValueError):
    """A path that cannot be read or written as asked; one line naming the path and the problem."""


def _same_path(a: Path, b: Path) -> bool:
    """True when `a` and `b` name one file: any spelling, symlink or hard link."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def _is_within(path: Path, folder: Path) -> bool:
    """True when `path` is `folder` or lies somewhere below it (symlinks resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_parent_writable(path: Path) -> None:
    """Refuse a path whose parent folders cannot be created or written."""
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor.is_symlink():  # a dangling symlink cannot be created over
            raise PathError(f"{path}: {ancestor} is a broken symbolic link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PathError(f"{path}: {ancestor} is a file, not a folder")
    # W_OK for the folder's entries, X_OK to reach them; a read-only mount fails both even
    # for root (access(2) answers EROFS).
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PathError(f"{path}: folder {ancestor} is not writable")


def check_input_file(path: Path) -> None:
    """Refuse an input that is absent or not a regular file, naming it."""
    if path.is_dir():
        raise PathError(f"{path}: is a folder, expected a file")
    if not path.is_file():
        raise PathError(f"{path}: file not found")


def check_output_file(out: Path, inputs: Iterable[Path | None] = ()) -> None:
    """Refuse, before any work, an output file that would overwrite an input or cannot be written.

    `inputs` are the files (or folders) the command reads; `None` entries (optional inputs not
    given) are skipped.
    """
    if out.is_dir():
        raise PathError(f"{out}: is a folder, expected a file path")
    for source in inputs:
        if source is not None and _same_path(out, source):
            raise PathError(f"{out}: is the input {source}; writing it would destroy the input")
    _check_parent_writable(out)


def check_output_folder(
    folder: Path,
    inputs: Iterable[Path | None] = (),
    outputs: Iterable[Path] = (),
    writes: Iterable[str] = (),
) -> None:
    """Refuse, before any work, an output folder whose publication would overwrite a file in
    use, or that cannot be a folder.

    Publishing (`publish_files`) replaces only what the command writes there: `writes` names it
    (relative paths or `fnmatch` patterns; a name that is a folder covers all inside it). An
    input or another output may sit in the folder beside those, never be one of them; and the
    folder may not lie inside an input.
    """
    if folder.exists() and not folder.is_dir():
        raise PathError(f"{folder}: is a file, expected a folder")
    patterns = list(writes)
    for kind, paths in (("input", inputs), ("output", outputs)):
        for path in paths:
            if path is None:
                continue
            if _is_within(folder, path):
                raise PathError(f"{folder}: lies inside the {kind} {path}")
            if not _is_within(path, folder):
                continue
            relative = Path(os.path.relpath(Path(path).resolve(), folder.resolve())).as_posix()
            for pattern in patterns:
                if fnmatch.fnmatch(relative, pattern) or relative.startswith(pattern + "/"):
                    raise PathError(
                        f"{folder}: the command writes {relative} there, which is the {kind} "
                        f"{path}; keep it elsewhere"
                    )
    _check_parent_writable(folder)


# What a failed write raises: the OS error, or Polars' own error wrapping it ("parquet: ...
# underlying IO error: No space left on device (os error 28)").
WRITE_ERRORS = (OSError, pl.exceptions.PolarsError)


def _writing(path: Path, error: Exception) -> PathError:
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    reason = text.splitlines()[0] if text else type(error).__name__
    return PathError(f"{path}: cannot write: {reason}")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Report a failed write inside the block as a `PathError` naming `path`."""
    try:
        yield
    except WRITE_ERRORS as error:
        raise _writing(path, error) from error


def make_parents(path: Path) -> list[Path]:
    """Create the missing parent folders of `path`; return them, deepest first."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def remove_folders(folders: list[Path]) -> None:
    """Remove folders this write created, deepest first, where they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # something else was put there meanwhile: not ours to delete
            return


