"""Files and folders the commands read and write: checked before the work, written all or nothing.

The file-based commands promise (DESIGN.md) that a bad request ends with one line naming the
path and the problem, exit code 2, and nothing written. So the paths are checked before any
work (`check_input_file`, `check_output_file`, `check_output_folder`): an output that would
overwrite an input, through whatever spelling, symlink or hard link; a folder given where a
file is expected and the reverse; a parent folder that cannot be created or written. Then
outputs are written beside their target and swapped in only when complete
(`replaced_on_success`, `replaced_folder_on_success`), so a failure leaves the previous
content; a write that still fails (a full disk) is reported naming the path.

Missing parent folders of an output are created, as `mkdir -p` would: a user who names
`out/forecast.parquet` wants it there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
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
    folder: Path, inputs: Iterable[Path | None] = (), outputs: Iterable[Path] = ()
) -> None:
    """Refuse, before any work, an output folder whose replacement would delete a file in use.

    The folder is replaced whole, so no input and no other output of the command may lie in it
    (or be it), and an input folder may not contain it either.
    """
    if folder.exists() and not folder.is_dir():
        raise PathError(f"{folder}: is a file, expected a folder")
    for source in inputs:
        if source is None:
            continue
        if _is_within(source, folder):
            raise PathError(
                f"{folder}: holds the input {source}; replacing the folder would delete it"
            )
        if _is_within(folder, source):
            raise PathError(f"{folder}: lies inside the input {source}")
    for other in outputs:
        if _is_within(other, folder):
            raise PathError(
                f"{folder}: holds the output {other}; replacing the folder would delete it"
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


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parent folders of `path`; return them, deepest first."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_folders(folders: list[Path]) -> None:
    """Remove folders this write created, deepest first, where they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # something else was put there meanwhile: not ours to delete
            return


@contextmanager
def replaced_on_success(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; it replaces `out` only if the block completes.

    On any error the temporary file, and any parent folder created for it, are removed and `out`
    keeps its previous content; a failed write (no space, a read-only folder) becomes a
    `PathError` naming `out`.
    """
    with writing(out):
        created = _make_parents(out)
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
    tmp = Path(name)
    try:
        with writing(out):
            yield tmp
            os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_folders(created)
        raise


def swap_in_folder(staged: Path, target: Path) -> None:
    """Replace folder `target` by `staged`; the old one is removed only after the swap."""
    retired = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, retired)
    try:
        os.replace(staged, target)
    except BaseException:
        if retired.exists():
            os.replace(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def replaced_folder_on_success(folder: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of `folder`; it replaces `folder` if the block completes.

    Nothing of the previous folder survives a successful replacement (no stale file of an older
    run), and on any error the previous folder is left as it was (parent folders created for it
    are removed). A failed write becomes a `PathError` naming `folder`.
    """
    with writing(folder):
        created = _make_parents(folder)
        staged = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with writing(folder):
            yield staged
            swap_in_folder(staged, folder)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        _remove_folders(created)
        raise
