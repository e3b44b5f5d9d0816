"""Write outputs all or nothing, and publish folders that people and tools read: the one way the
product writes files.

- `replaced_on_success(out)`: one file (a file command's `--out`), written beside it and renamed
  over it only when complete; a write that still fails (a full disk) is reported naming the path,
  and parent folders created for it are removed again.
- `publish_files(folder, files, owner=...)`: files in a folder the product may share with other
  files (`capacity rightsize --exports DIR`, `capacity token-cost --report-dir DIR`,
  `reports/latest/`). Only what this owner published last time is replaced or removed; anything
  else in the folder (a user's notes, the input file, another report's files) is never touched.
  What each owner wrote is listed in the folder's ownership manifest (`.capacity-owned.json`),
  written once before the files (everything that may appear) and once after (what is there).
  Sub-folders that are wholly the product's (`patches/`) are named in `whole_folders` and swapped
  in whole, so a workload that dropped out loses its stale patch with no window where half the
  patches are new.
- `publish_folder(folder, files)`: a folder that is wholly the product's (a weekly report's
  `<ISO week>/`): built beside it and swapped in whole.

Readers see every file complete or absent and a swapped folder old or new, never mixed: all
content is written under staging names first and only then renamed into place, folders exchanged
in one `renameat2(RENAME_EXCHANGE)` where the kernel and filesystem offer it, else by two renames
(the folder is then briefly absent). A failure or a crash while content is written leaves the
previous publication as it was; staging leftovers carry a recognisable name and the next publish
of the same names removes them. Files and folders
get the modes `open()` and `mkdir()` give them under the user's umask, not the private 0600 /
0700 of `tempfile`. No path is written or removed outside the folder: names are checked, and a
link where a folder is expected is refused, never followed.

The paths a command is given are checked before any work in `path_checks.py`.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from capacity_pipelines.common.path_checks import make_parents, remove_folders, writing

Content = bytes | str | Callable[[Path], object]
"""A published file's content: bytes, text (UTF-8), or a writer called with the path to write."""

OWNERSHIP_MANIFEST = ".capacity-owned.json"
STAGING_SUFFIX = ".capacity-staging"
_STAGING_TAIL = r"[0-9a-f]{16}" + re.escape(STAGING_SUFFIX) + r"\Z"
_STAGING_NAME = re.compile(r"\..*\." + _STAGING_TAIL, re.DOTALL)
# Longest published name: leaves room under Linux's NAME_MAX (255 bytes) for the staging name.
MAX_NAME_BYTES = 200
# Staging names keep only the start of the name they stand for (NAME_MAX again).
_STAGING_STEM_CHARS = 64
_AT_FDCWD = -100  # <fcntl.h>
_RENAME_EXCHANGE = 2  # <linux/fs.h>


class PublishError(ValueError):
    """A publication that would leave its folder, write through a link, or contradict itself."""


# -- single files ------------------------------------------------------------------------------


def _staging_path(path: Path) -> Path:
    return path.with_name(
        f".{path.name[:_STAGING_STEM_CHARS]}.{secrets.token_hex(8)}{STAGING_SUFFIX}"
    )


def _new_file(path: Path) -> Path:
    """An empty staging file beside `path`, with the mode `open()` would give `path`."""
    staged = _staging_path(path)
    os.close(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
    return staged


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, content: Content) -> None:
    if isinstance(content, str):
        content = content.encode("utf-8")
    if isinstance(content, bytes):
        with open(path, "wb") as handle:
            handle.write(content)
    else:
        content(path)
    _fsync(path)  # the rename that follows must not publish a file whose data is not on disk


@contextmanager
def replaced_on_success(out: Path) -> Iterator[Path]:
    """Yield a staging sibling of `out`; it replaces `out` only if the block completes.

    On any error the staging file, and any parent folder created for it, are removed and `out`
    keeps its previous content; a failed write (no space, a read-only folder) becomes a
    `PathError` naming `out`.
    """
    out = Path(out)
    with writing(out):
        created = make_parents(out)
        tmp = _new_file(out)
    try:
        with writing(out):
            yield tmp
            _fsync(tmp)
            os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        remove_folders(created)
        raise


# -- names -------------------------------------------------------------------------------------


def _relative(path: str) -> PurePosixPath:
    """`path` as a name inside the published folder, or `PublishError` saying why it is not."""
    problem = None
    if not isinstance(path, str) or not path:
        problem = "is empty"
    elif "\x00" in path or "\\" in path:
        problem = "holds a NUL or a backslash"
    elif path.startswith("/"):
        problem = "is absolute"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        problem = "has an empty, '.' or '..' component"
    else:
        try:
            longest = max(len(part.encode("utf-8")) for part in path.split("/"))
        except UnicodeEncodeError:
            problem = "is not valid Unicode text"
        else:
            if longest > MAX_NAME_BYTES:
                problem = f"has a component longer than {MAX_NAME_BYTES} bytes"
    if problem is None:
        relative = PurePosixPath(path)
        if relative.name == OWNERSHIP_MANIFEST or any(
            _STAGING_NAME.match(p) for p in relative.parts
        ):
            problem = "is a name the publisher reserves for itself"
        else:
            return relative
    raise PublishError(f"cannot publish {path!r}: the path {problem}")


def _is_under(path: PurePosixPath, folder: PurePosixPath) -> bool:
    return path != folder and folder in path.parents


@dataclass(frozen=True)
class _Plan:
    """What one publication writes: loose files and wholly-owned sub-folders with their files."""

    loose: dict[PurePosixPath, Content]
    whole: dict[PurePosixPath, dict[PurePosixPath, Content]]

    @classmethod
    def of(cls, files: Mapping[str, Content], whole_folders: Collection[str]) -> _Plan:
        whole: dict[PurePosixPath, dict[PurePosixPath, Content]] = {
            _relative(f): {} for f in whole_folders
        }
        for a in whole:
            for b in whole:
                if _is_under(a, b):
                    raise PublishError(f"cannot publish: whole folder {a} is inside {b}")
        loose: dict[PurePosixPath, Content] = {}
        for name, content in files.items():
            path = _relative(name)
            if path in whole:
                raise PublishError(f"cannot publish {path}: it is also a whole folder")
            owner = next((w for w in whole if _is_under(path, w)), None)
            if owner is not None:
                whole[owner][path.relative_to(owner)] = content
            else:
                loose[path] = content
        every = [*loose, *whole]
        names = set(every)
        for path in every:
            clash = next((p for p in path.parents if p in names), None)
            if clash is not None:
                raise PublishError(f"cannot publish {path}: {clash} would be a file and a folder")
        return cls(loose, whole)


# -- folders -----------------------------------------------------------------------------------


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialise publishers of one folder (a lock on the folder itself: no lock file to leave)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _make_dirs(root: Path, relative: PurePosixPath) -> Path:
    """Create `relative` under `root` (umask modes), refusing to pass through a link or a file."""
    current = root
    for part in relative.parts:
        current = current / part
        try:
            os.mkdir(current)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                raise PublishError(
                    f"cannot publish into {current}: it is a link or a file, not a folder"
                ) from None
    return current


def _real_dirs(root: Path, relative: PurePosixPath) -> bool:
    """Whether every folder on the way to `relative` under `root` exists and is no link."""
    current = root
    for part in relative.parts:
        current = current / part
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return False
        except FileNotFoundError:
            return False
    return True


def _build(staging: Path, files: Mapping[PurePosixPath, Content]) -> None:
    """Fill a new, not yet visible folder (files written in place: nobody reads it yet)."""
    os.mkdir(staging)
    for relative, content in files.items():
        _write(_make_dirs(staging, relative.parent) / relative.name, content)


def _exchange(staged: Path, target: Path) -> bool:
    """Swap two folders in one step (Linux `renameat2(RENAME_EXCHANGE)`); False if unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    exchanged = renameat2(
        _AT_FDCWD, os.fsencode(staged), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE
    )
    if exchanged == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(target))


def _swap_in(staged: Path, target: Path) -> None:
    """Put the complete folder `staged` at `target`; the previous folder is removed after."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        os.rename(staged, target)
        return
    if not stat.S_ISDIR(mode):
        raise PublishError(f"cannot replace {target}: it is a link or a file, not a folder")
    if _exchange(staged, target):
        retired = staged  # the exchange left the previous folder under the staging name
    else:
        retired = _staging_path(target)
        os.rename(target, retired)
        try:
            os.rename(staged, target)
        except BaseException:
            os.rename(retired, target)
            raise
    shutil.rmtree(retired, ignore_errors=True)


def _remove_leftovers(directory: Path, names: Collection[str]) -> None:
    """Remove staging files and folders a crashed publish of `names` left in `directory`."""
    stems = "|".join(re.escape(f".{name[:_STAGING_STEM_CHARS]}.") for name in names)
    ours = re.compile(f"(?:{stems}){_STAGING_TAIL}", re.DOTALL)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if not ours.match(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)


def _publish_file(folder: Path, relative: PurePosixPath, content: Content) -> None:
    target = _make_dirs(folder, relative.parent) / relative.name
    staged = _new_file(target)
    try:
        _write(staged, content)
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)


def _stage_and_commit(
    folder: Path,
    loose: Mapping[PurePosixPath, Content],
    whole: Mapping[PurePosixPath, Mapping[PurePosixPath, Content]],
) -> None:
    """Write everything under staging names first, then rename it all into place.

    A writer that fails (or a process killed) while content is being written leaves the
    previous publication untouched; only the renames at the end, each atomic, can interleave.
    """
    folders: list[tuple[Path, Path]] = []
    files: list[tuple[Path, Path]] = []
    try:
        for relative, whole_files in whole.items():
            target = _make_dirs(folder, relative.parent) / relative.name
            folders.append((_staging_path(target), target))
            _build(folders[-1][0], whole_files)
        for relative, content in loose.items():
            target = _make_dirs(folder, relative.parent) / relative.name
            files.append((_new_file(target), target))
            _write(files[-1][0], content)
        for staged, target in folders:
            _swap_in(staged, target)
        for staged, target in files:
            os.replace(staged, target)
    finally:
        for staged, _ in folders:
            shutil.rmtree(staged, ignore_errors=True)
        for staged, _ in files:
            staged.unlink(missing_ok=True)


# -- the ownership manifest --------------------------------------------------------------------


def _read_manifest(folder: Path) -> dict[str, dict[str, list[str]]]:
    """owner -> {"files": [...], "folders": [...]}; unreadable or unsafe entries own nothing."""
    try:
        owners = json.loads((folder / OWNERSHIP_MANIFEST).read_text(encoding="utf-8"))["owners"]
        items = list(owners.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # owning nothing is the safe default: nothing will be removed
    manifest = {}
    for owner, owned in items:
        entry = {}
        for kind in ("files", "folders"):
            listed = owned.get(kind, []) if isinstance(owned, dict) else []
            entry[kind] = [str(p) for p in listed if _safe_name(p)]
        manifest[str(owner)] = entry
    return manifest


def _safe_name(path: object) -> bool:
    try:
        _relative(path)  # type: ignore[arg-type]
    except PublishError:
        return False
    return True


def _write_manifest(folder: Path, manifest: dict[str, dict[str, list[str]]]) -> None:
    document = {
        "about": "Files and folders that capacity_pipelines published here, by owner. It replaces "
        "or removes only these; anything else in this folder is yours and left alone.",
        "owners": {owner: manifest[owner] for owner in sorted(manifest)},
    }
    _publish_file(folder, PurePosixPath(OWNERSHIP_MANIFEST), json.dumps(document, indent=2) + "\n")


def _remove_stale(folder: Path, files: Collection[str], folders: Collection[str]) -> None:
    """Remove what an owner published before and no longer does (only regular files / folders
    reached without passing a link: a user's link or replacement stays)."""
    emptied = set()
    for name in files:
        relative = PurePosixPath(name)
        if not _real_dirs(folder, relative.parent):
            continue
        path = folder / relative
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                path.unlink()
                emptied.add(relative.parent)
        except FileNotFoundError:
            pass
    for name in folders:
        relative = PurePosixPath(name)
        path = folder / relative
        if _real_dirs(folder, relative):
            shutil.rmtree(path, ignore_errors=True)
            emptied.add(relative.parent)
    # Folders the publisher created for those files go when they are left empty.
    for relative in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
        for parent in [relative, *relative.parents][:-1]:
            try:
                os.rmdir(folder / parent)
            except OSError:
                break


# -- the two ways to publish -------------------------------------------------------------------


def publish_files(
    folder: Path,
    files: Mapping[str, Content],
    *,
    owner: str,
    whole_folders: Collection[str] = (),
) -> list[Path]:
    """Publish `files` (relative path -> content) into `folder` for `owner`; returns their paths.

    After it returns, `folder` holds exactly this publication's files plus whatever was there
    that `owner` did not publish. Every file is written under a staging name first; then each of
    `whole_folders` is swapped in whole (an empty one when no file goes in it) and the other
    files are renamed into place in the order given (put the one that marks a publication
    complete last). Publishers of one folder are serialised.
    """
    plan = _Plan.of(files, whole_folders)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    new_files = sorted(str(p) for p in plan.loose)
    new_folders = sorted(str(p) for p in plan.whole)
    with _locked(folder):
        manifest = _read_manifest(folder)
        before = manifest.get(owner, {"files": [], "folders": []})
        # First everything that may appear, so a crash never leaves an unlisted file of ours.
        manifest[owner] = {
            "files": sorted(set(before["files"]) | set(new_files)),
            "folders": sorted(set(before["folders"]) | set(new_folders)),
        }
        _write_manifest(folder, manifest)
        # Leftovers of a crashed publish of any name this owner has or had, and of the manifest.
        by_directory: dict[PurePosixPath, set[str]] = {PurePosixPath("."): {OWNERSHIP_MANIFEST}}
        for path in [*manifest[owner]["files"], *manifest[owner]["folders"]]:
            relative = PurePosixPath(path)
            by_directory.setdefault(relative.parent, set()).add(relative.name)
        for directory, names in by_directory.items():
            if _real_dirs(folder, directory):
                _remove_leftovers(folder / directory, names)
        _stage_and_commit(folder, plan.loose, plan.whole)
        swapped = [PurePosixPath(f) for f in new_folders]
        written = [*plan.loose, *plan.whole]
        _remove_stale(
            folder,
            # files of a folder swapped in whole went with the previous folder
            [
                f
                for f in set(before["files"]) - set(new_files)
                if not any(_is_under(PurePosixPath(f), w) for w in swapped)
            ],
            # a folder that now holds loose files of this publication stays
            [
                f
                for f in set(before["folders"]) - set(new_folders)
                if not any(_is_under(p, PurePosixPath(f)) for p in written)
            ],
        )
        manifest[owner] = {"files": new_files, "folders": new_folders}
        for other, owned in manifest.items():
            if other != owner:  # a path another owner listed now belongs to this one
                owned["files"] = [f for f in owned["files"] if f not in new_files]
                owned["folders"] = [f for f in owned["folders"] if f not in new_folders]
        _write_manifest(folder, manifest)
    return [folder / p for p in plan.loose] + [
        folder / w / p for w, whole_files in plan.whole.items() for p in whole_files
    ]


def publish_folder(folder: Path, files: Mapping[str, Content]) -> list[Path]:
    """Publish `folder` as exactly `files`: built beside it, then swapped in whole.

    For folders that are wholly the product's (a weekly report's `<ISO week>/`): anything else
    in the previous folder goes with it. Returns the published files' paths.
    """
    plan = _Plan.of(files, ())
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent):
        _remove_leftovers(folder.parent, [folder.name])
        staging = _staging_path(folder)
        try:
            _build(staging, plan.loose)
            _swap_in(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return [folder / p for p in plan.loose]
