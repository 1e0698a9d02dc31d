"""Opening, listing, copying and removing the files a job could have touched: no links, regular files only,
bounded reads and walks.

A job can rename, replace or create any name inside its folder while the executor reads it: a link
to the key file or to /dev/zero in place of an output, a FIFO in place of a log. So every component
below a trusted root is opened relative to its parent's descriptor with O_NOFOLLOW, a file is opened
non-blocking and checked to be a regular file before a byte is read, and every read has a bound.
Where the platform has no descriptor-relative open (Windows), each component is checked with lstat
first: a weaker check, stated in docs/operations.md, as Windows jobs are not isolated anyway.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePath, PurePosixPath
from typing import BinaryIO, Callable, Iterator

from mlops.errors import InvalidRequest

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY
_DIR_FLAGS = os.O_RDONLY | _NOFOLLOW | _DIRECTORY | _NONBLOCK | _CLOEXEC
_CHUNK = 1 << 16
# linux/fs.h: FICLONE clones a whole file's blocks (btrfs, XFS, bcachefs, and OCFS2 share them copy-on-write).
_FICLONE = 0x40049409 if fcntl is not None and os.path.isdir("/proc/self/fd") else None
# A hard link made through /proc/self/fd/N links the inode the descriptor holds (Linux).
_FD_LINKS = os.path.isdir("/proc/self/fd")

# Any walk visits at most this many entries (folders, links, FIFOs and files alike): a job writing a
# million empty folders cannot make a listing a million steps. A listing's own limit counts files only,
# so that a few folders or links never hide the files beside them; a complete listing (no file limit:
# a model to archive or register) refuses the folder beyond the bound (TooManyEntries) rather than
# return a part.
MAX_COMPLETE_WALK_ENTRIES = 100_000
# Folders nested deeper than this below the listed one are not walked (each open level holds a descriptor).
MAX_FOLDER_DEPTH = 64


class UnsafeFile(OSError):
    """A path under a job's folder is a link, a FIFO, a device or a folder where a regular file belongs."""


class TooManyEntries(Exception):
    """A folder to be listed whole holds more entries, or deeper folders, than a walk may visit."""


class TreeTooLarge(TooManyEntries):
    """A folder to be copied holds more bytes than a copy may take."""


@dataclass(frozen=True)
class FileEntry:
    """A regular file found below a folder: its path relative to the walk's root, and its size."""

    relative: str
    size: int


def _parts(relative: str | PurePath) -> list[str]:
    path = PurePath(relative)
    parts = [part for part in path.parts if part != "."]
    if not parts or path.is_absolute() or ".." in parts:
        raise UnsafeFile(f"{relative!s} is not a path inside the folder")
    return parts


def _open_regular(root: Path, relative: str | PurePath, flags: int, mode: int = 0o600) -> int:
    """Return a descriptor of the regular file root/relative, opened without following any link below root."""
    parts = _parts(relative)
    if not _DIR_FD:
        fd = _open_checked_by_lstat(root, parts, flags, mode)
    else:
        parent = _open_folder(root, parts[:-1])
        try:
            fd = os.open(parts[-1], flags, mode, dir_fd=parent)
        except OSError as exc:
            # O_NOFOLLOW on a link fails with ELOOP (EMLINK on FreeBSD).
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise UnsafeFile(f"{PurePath(relative)!s} under {root} is a link") from None
            raise
        finally:
            os.close(parent)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFile(f"{PurePath(relative)!s} under {root} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def _opened(root: Path, relative: str | PurePath, flags: int) -> Iterator[int]:
    fd = _open_regular(root, relative, flags)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_checked_by_lstat(root: Path, parts: list[str], flags: int, mode: int) -> int:
    path = root
    for index, part in enumerate(parts):
        path = path / part
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            if index == len(parts) - 1 and flags & os.O_CREAT:
                break
            raise
        if _is_link(info):
            raise UnsafeFile(f"{path} is a link")
    return os.open(path, flags & ~(_NONBLOCK | _NOFOLLOW), mode)


def open_file(root: Path, relative: str | PurePath) -> tuple[BinaryIO, int]:
    """Open a regular file below root for reading, never through a link; return it and its size."""
    fd = _open_regular(root, relative, _READ_FLAGS)
    size = os.fstat(fd).st_size
    return os.fdopen(fd, "rb"), size


def read_bounded(root: Path, relative: str | PurePath, limit: int) -> tuple[bytes, int]:
    """Return up to `limit` bytes from the start of a regular file below root, and the file's size."""
    with _opened(root, relative, _READ_FLAGS) as fd:
        size = os.fstat(fd).st_size
        return _read_up_to(fd, min(size, limit)), size


def read_tail(root: Path, relative: str | PurePath, limit: int) -> tuple[bytes, int]:
    """Return the last `limit` bytes of a regular file below root, and the file's size."""
    with _opened(root, relative, _READ_FLAGS) as fd:
        size = os.fstat(fd).st_size
        start = max(0, size - limit)
        os.lseek(fd, start, os.SEEK_SET)
        return _read_up_to(fd, size - start), size


def _read_up_to(fd: int, count: int) -> bytes:
    # The size comes from fstat; a file that grows meanwhile is read only up to that size.
    chunks, remaining = [], count
    while remaining > 0:
        chunk = os.read(fd, min(_CHUNK, remaining))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def append_text(root: Path, relative: str | PurePath, text: str) -> None:
    """Append text to a regular file below root, creating it; never through a link."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY
    data = text.encode("utf-8", errors="replace")
    with _opened(root, relative, flags) as fd:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]


def write_bytes(root: Path, relative: str | PurePath, data: bytes) -> None:
    """Replace the content of a regular file below root, creating it; never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY
    with _opened(root, relative, flags) as fd:
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]


def regular_files(root: Path, folder: str | PurePath, limit: int | None) -> tuple[list[FileEntry], bool]:
    """List up to `limit` (or all) regular files below root/folder, links neither followed nor listed.

    Returns the entries (paths relative to root, in tree order: a folder's files together in name order)
    and whether the listing stopped early: a file left out, or the walk's budget spent before the folder
    was walked whole (MAX_COMPLETE_WALK_ENTRIES, MAX_FOLDER_DEPTH). With no limit the listing is complete
    or raises TooManyEntries.
    A folder that is missing, a link or not a folder has no files.
    """
    parts = _parts(folder)
    if not _DIR_FD:
        return _tree_order(*_regular_files_by_lstat(root, parts, limit))
    walk = _Walk(parts, limit)
    try:
        complete = walk.run(root)
    except _BudgetSpent:
        raise TooManyEntries(f"{PurePath(*parts)!s} holds more than {MAX_COMPLETE_WALK_ENTRIES} "
                             f"entries or folders nested deeper than {MAX_FOLDER_DEPTH}") from None
    return walk.entries, not complete


@dataclass(frozen=True)
class Tree:
    """What a copy of a folder holds: its plain folders and regular files, paths relative to the walk's root."""

    folders: list[str]
    files: list[FileEntry]

    @property
    def size(self) -> int:
        """Return the bytes of its files."""
        return sum(entry.size for entry in self.files)


def copyable_tree(root: Path, folder: str | PurePath) -> Tree:
    """Return every plain folder and regular file below root/folder that a copy takes, walked whole.

    Links are neither followed nor taken, not even those that stay inside the folder (a `loop -> .`
    would copy the folder into itself without end); FIFOs, devices and __pycache__ are left out.
    Raises TooManyEntries past the walk's bounds (MAX_COMPLETE_WALK_ENTRIES, MAX_FOLDER_DEPTH).
    """
    parts = _parts(folder)
    if _DIR_FD:
        walk = _Walk(parts, None)
        try:
            walk.run(root)
        except _BudgetSpent:
            raise TooManyEntries(f"{PurePath(*parts)!s} holds more than {MAX_COMPLETE_WALK_ENTRIES} "
                                 f"entries or folders nested deeper than {MAX_FOLDER_DEPTH}") from None
        folders, files = walk.folders, walk.entries
    else:
        files, _more = regular_files(root, folder, None)
        folders = sorted({PurePath(entry.relative).parent.as_posix() for entry in files})
    return Tree([name for name in folders if "__pycache__" not in PurePath(name).parts],
                [entry for entry in files if "__pycache__" not in PurePath(entry.relative).parts])


def copy_tree(source: Path, dest: Path, max_bytes: int, replace: bool = False) -> Tree:
    """Copy a folder's plain folders and regular files (copyable_tree) to dest and return what was copied.

    The copy is made in a temporary folder beside dest and renamed into place: a failure (a bound, a
    full disk, a file that turned into a link meanwhile) leaves nothing at dest. dest must not exist,
    or be an empty folder, which the copy replaces; with replace, whatever is at dest (a folder an
    interrupted attempt filled, a file, a link) gives way once the copy is whole, and is removed without
    following a link. Raises TreeTooLarge beyond max_bytes. Where the filesystem clones blocks (a
    reflink), a file is cloned: a copy of its own that writes no bytes.
    """
    tree, _placed = _place_tree(source, dest, max_bytes, _Placer(lambda _info: False, reflink=True), replace)
    return tree


class Placement(str, Enum):
    """How a snapshot holds one file: the source's own inode, a clone of its blocks, or a copy."""

    LINK = "hard link"
    REFLINK = "reflink"
    COPY = "copy"


@dataclass(frozen=True)
class Snapshot:
    """A folder placed by snapshot_tree: what it holds and how many files each placement took."""

    tree: Tree
    placed: dict[Placement, int]

    def describe(self) -> str:
        """Say in a few words how the files were placed, e.g. 'hard link: 120, copy: 2'."""
        counts = [f"{placement.value}: {count}" for placement, count in self.placed.items() if count]
        return ", ".join(counts) or "no files"


def snapshot_tree(source: Path, dest: Path, max_bytes: int, may_link: Callable[[os.stat_result], bool],
                  replace: bool = False) -> Snapshot:
    """Place a folder's files (copyable_tree) at dest as they are now, writing as few bytes as it can.

    A file may_link allows is hard-linked: dest shares its inode, which a later replacement of the
    source (a rename over it) leaves alone, but a write through either name changes both, so only a
    reader may be given it. Where a link is not allowed or not possible (another filesystem), the file
    is cloned (a reflink, on filesystems that share blocks copy-on-write), else copied. Each file is
    opened without following links and linked through its descriptor: what is placed is what was
    opened. Atomic, bounded and replacing (replace) as copy_tree.
    """
    placer = _Placer(may_link, reflink=True)
    tree, placed = _place_tree(source, dest, max_bytes, placer, replace)
    return Snapshot(tree, placed)


def _place_tree(source: Path, dest: Path, max_bytes: int, placer: "_Placer",
                replace: bool) -> tuple[Tree, dict[Placement, int]]:
    tree = copyable_tree(source.parent, source.name)
    if tree.size > max_bytes:
        raise TreeTooLarge(f"{source.name} holds {tree.size} bytes, more than the {max_bytes} a copy may take")
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.copy-"))
    placed = dict.fromkeys(Placement, 0)
    # Strings, not paths: a dataset has thousands of files, and pathlib costs more than the link itself.
    prefix = len(source.name) + 1
    try:
        os.chmod(temporary, 0o755)
        for folder in tree.folders:
            if len(folder) > prefix:
                os.makedirs(os.path.join(temporary, folder[prefix:]), mode=0o755, exist_ok=True)
        total = 0
        with placer.into(source.parent, temporary):
            for entry in tree.files:
                placement, size = placer.place(entry.relative, entry.relative[prefix:])
                placed[placement] += 1
                total += size
                if total > max_bytes:
                    # A file grew between the walk and its copy.
                    raise TreeTooLarge(f"{source.name} grew past the {max_bytes} bytes a copy may take while copied")
        if replace:
            _replace_with(temporary, dest)
        else:
            try:
                # An empty folder made for the copy gives way; one with files in it stays, and the rename fails.
                os.rmdir(dest)
            except FileNotFoundError:
                pass
            os.rename(temporary, dest)
    except BaseException:
        remove_tree(temporary)
        raise
    return tree, placed


def _replace_with(temporary: Path, dest: Path) -> None:
    """Rename temporary to dest, moving whatever was at dest aside first and removing it after."""
    aside = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
    try:
        try:
            # rename moves a link itself, never what it points to.
            os.rename(dest, aside / dest.name)
        except FileNotFoundError:
            pass
        os.rename(temporary, dest)
    finally:
        remove_tree(aside)


class _Placer:
    """Places files one by one into a new folder, and stops trying a way the filesystem has refused once."""

    # A file system without links across it, or without block cloning, answers one of these for every file.
    _LINK_REFUSALS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.ENOENT)
    _CLONE_REFUSALS = (errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOTTY, errno.ENOSYS)

    def __init__(self, may_link: Callable[[os.stat_result], bool], reflink: bool):
        self.may_link = may_link
        self.link = _FD_LINKS and _DIR_FD
        self.reflink = reflink and _FICLONE is not None
        self._root = self._target_path = Path()
        self._target: int | None = None
        self._folder: tuple[str, int] | None = None

    @contextmanager
    def into(self, root: Path, target: Path) -> Iterator[None]:
        """Place files from below root into target (a folder the executor just made) while in the block."""
        self._root, self._target_path = root, target
        self._target = os.open(target, _DIR_FLAGS) if _DIR_FD else None
        try:
            yield
        finally:
            for fd in (self._target, self._folder[1] if self._folder else None):
                if fd is not None:
                    os.close(fd)
            self._target = self._folder = None

    def place(self, relative: str, target: str) -> tuple[Placement, int]:
        """Place root/relative at target (relative to the target folder); return how, and its size."""
        source = self._open(relative)
        if self._target is None:  # no descriptor-relative calls here: the target folder by its path
            target = os.path.join(self._target_path, target)
        try:
            info = os.fstat(source)
            if self.link and self.may_link(info):
                try:
                    # Through the descriptor: the inode opened above, even if its name changed since. With
                    # a directory descriptor os.link calls linkat, which follows /proc's link to that inode.
                    os.link(f"/proc/self/fd/{source}", target, dst_dir_fd=self._target, follow_symlinks=True)
                    return Placement.LINK, info.st_size
                except OSError as exc:
                    if exc.errno not in self._LINK_REFUSALS:
                        raise
                    if exc.errno in (errno.EXDEV, errno.ENOTSUP, errno.ENOENT):
                        self.link = False
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY
            # The permission bits travel (a script may be executable); set-id bits never do.
            out = os.open(target, flags, stat.S_IMODE(info.st_mode) & 0o777, dir_fd=self._target)
            try:
                if self.reflink:
                    try:
                        fcntl.ioctl(out, _FICLONE, source)
                        return Placement.REFLINK, info.st_size
                    except OSError as exc:
                        if exc.errno not in self._CLONE_REFUSALS:
                            raise
                        self.reflink = False
                return Placement.COPY, _copy_bytes(source, out, info.st_size)
            finally:
                os.close(out)
        finally:
            os.close(source)

    def _open(self, relative: str) -> int:
        """Open a regular file below root without following links, its folder opened once for all its files."""
        if not _DIR_FD:
            return _open_regular(self._root, relative, _READ_FLAGS)
        folder, _, name = relative.rpartition("/")
        if self._folder is None or self._folder[0] != folder:
            if self._folder is not None:
                os.close(self._folder[1])
                self._folder = None
            self._folder = (folder, _open_folder(self._root, _parts(folder)))
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self._folder[1])
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise UnsafeFile(f"{relative} under {self._root} is a link") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafeFile(f"{relative} under {self._root} is not a regular file")
        return fd


def _copy_bytes(source: int, out: int, size: int) -> int:
    # Up to the size fstat gave: a file that grows meanwhile is copied as it was when opened.
    left, copied = size, 0
    while left > 0:
        chunk = os.read(source, min(_CHUNK, left))
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            view = view[os.write(out, view):]
        left -= len(chunk)
        copied += len(chunk)
    return copied


def tree_digest(root: Path, folder: str | PurePath) -> str:
    """Return the SHA-256 of what a copy of root/folder takes: each file's path below folder, size and bytes."""
    name = PurePath(*_parts(folder))
    digest = hashlib.sha256()
    for entry in copyable_tree(root, folder).files:
        with _opened(root, entry.relative, _READ_FLAGS) as fd:
            size = os.fstat(fd).st_size
            digest.update(f"{PurePath(entry.relative).relative_to(name).as_posix()}\0{size}\0".encode())
            left = size
            while left > 0:
                chunk = os.read(fd, min(_CHUNK, left))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
    return digest.hexdigest()


class _BudgetSpent(Exception):
    """The walk found a file past its limit, or visited as many entries, or went as deep, as it may."""


class _Walk:
    """One depth-first walk by descriptors, in tree order, within an entry budget and a depth bound."""

    def __init__(self, parts: list[str], limit: int | None):
        self.parts = parts
        self.limit = limit
        self.budget_left = MAX_COMPLETE_WALK_ENTRIES
        self.entries: list[FileEntry] = []
        self.folders: list[str] = []

    def run(self, root: Path) -> bool:
        """Walk root/parts; return True when walked whole (a missing or non-folder top has nothing to walk).

        With no file limit, a spent budget raises _BudgetSpent; with one, the walk stops and returns False.
        """
        try:
            top = _open_folder(root, self.parts)
        except OSError:
            return True
        try:
            self.folder(top, [])
        except _BudgetSpent:
            if self.limit is None:
                raise
            return False
        finally:
            os.close(top)
        return True

    def folder(self, fd: int, below: list[str]) -> None:
        # Names sorted and folders entered at their name's place: the files come out in tree order,
        # so the entries kept when the walk stops early are the first ones of the whole listing.
        for name, is_folder in sorted(_list_folder(fd, self)):
            if is_folder:
                self._subfolder(fd, below + [name])
            else:
                self._file(fd, below, name)

    def spend(self) -> None:
        if self.budget_left == 0:
            raise _BudgetSpent()
        self.budget_left -= 1

    def _subfolder(self, parent: int, below: list[str]) -> None:
        if len(below) > MAX_FOLDER_DEPTH:
            # Each level holds a descriptor until it is walked: a job nesting folders without end would
            # otherwise take every descriptor of the process.
            raise _BudgetSpent()
        child = _open_subfolder(below[-1], parent)
        if child is None:
            return
        self.folders.append(PurePath(*self.parts, *below).as_posix())
        try:
            self.folder(child, below)
        finally:
            os.close(child)

    def _file(self, parent: int, below: list[str], name: str) -> None:
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return
        if not stat.S_ISREG(info.st_mode):
            return
        if len(self.entries) == self.limit:
            raise _BudgetSpent()
        self.entries.append(FileEntry(PurePath(*self.parts, *below, name).as_posix(), info.st_size))


def _list_folder(fd: int, walk: _Walk) -> list[tuple[str, bool]]:
    """Return the names in the open folder fd, each with whether it looked like a folder, within the budget."""
    found: list[tuple[str, bool]] = []
    try:
        # scandir works on its own copy of the descriptor; fd stays the caller's to close.
        with os.scandir(fd) as listing:
            for item in listing:
                walk.spend()
                try:
                    found.append((item.name, item.is_dir(follow_symlinks=False)))
                except OSError:
                    continue
    except OSError:
        return []
    return found


def _open_subfolder(name: str, parent: int) -> int | None:
    """Return a descriptor of the folder `name` in parent, or None if it is no longer a plain folder."""
    # The name was a folder when listed; the job may have put a FIFO, a file or a link in its place since.
    # O_DIRECTORY fails at once on anything but a folder (a plain open of a FIFO would wait for a writer),
    # O_NOFOLLOW on a link, and O_NONBLOCK keeps any other open from waiting.
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError:
        return None


def _tree_order(entries: list[FileEntry], more: bool) -> tuple[list[FileEntry], bool]:
    # By path components, not by the string: "code/a.py" comes before "code-v2.py", as in a tree.
    return sorted(entries, key=lambda entry: PurePath(entry.relative).parts), more


def remove_tree(path: Path) -> None:
    """Remove a file, FIFO, link or folder tree at path; a link is removed itself, never followed."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if _is_link(info):
        # A link, or a Windows junction (a folder link that os.rmdir removes without entering it).
        (os.rmdir if stat.S_ISDIR(info.st_mode) else os.unlink)(path)
    elif stat.S_ISDIR(info.st_mode):
        # rmtree walks by descriptors where the platform allows (rmtree.avoids_symlink_attacks):
        # a link inside is unlinked, never followed. Only a folder reaches it: rmtree opens its top,
        # which would block on a FIFO.
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _open_folder(root: Path, parts: list[str]) -> int:
    """Return a descriptor of root/parts..., each component opened without following a link."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise UnsafeFile(f"{part!r} under {root} is not a plain folder: {exc.strerror}") from None
            # The child is held first: were the close to fail, the handler below must not close fd twice.
            previous, fd = fd, child
            os.close(previous)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _regular_files_by_lstat(root: Path, parts: list[str], limit: int | None) -> tuple[list[FileEntry], bool]:
    entries: list[FileEntry] = []
    folders = [root.joinpath(*parts[:depth]) for depth in range(1, len(parts) + 1)]
    pending = [folders[-1]] if all(_is_plain_folder(folder) for folder in folders) else []
    while pending:
        with os.scandir(pending.pop()) as listing:
            for item in listing:
                info = item.stat(follow_symlinks=False)
                if _is_link(info):
                    continue
                if stat.S_ISDIR(info.st_mode):
                    pending.append(Path(item.path))
                elif stat.S_ISREG(info.st_mode):
                    if len(entries) == limit:
                        return entries, True
                    entries.append(FileEntry(Path(item.path).relative_to(root).as_posix(), info.st_size))
    return entries, False


def _is_plain_folder(path: Path) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and not _is_link(info)


def _is_link(info: os.stat_result) -> bool:
    # A Windows junction is a folder link that S_ISLNK does not show; its reparse tag does.
    return stat.S_ISLNK(info.st_mode) or bool(getattr(info, "st_reparse_tag", 0))


def resolve_storage_path(root: Path, relative: str, field: str) -> Path:
    """Resolve a path a request gives inside the storage root; refuse anything that leaves it."""
    if "\x00" in relative:
        raise InvalidRequest(field, "must not contain NUL bytes")
    candidate = PurePosixPath(relative.replace("\\", "/"))
    if candidate.is_absolute() or ".." in candidate.parts or re.match(r"^[A-Za-z]:", relative):
        raise InvalidRequest(field, "must be a relative path inside the storage root, without '..'")
    root = _real_root(root)
    resolved = _resolve_below(root, candidate)
    if resolved != root and root not in resolved.parents:
        raise InvalidRequest(field, "resolves outside the storage root")
    return resolved


def _resolve_below(real_root: Path, relative: PurePosixPath) -> Path:
    """Resolve a relative path without '..' below a root that is already real, as Path.resolve would."""
    # The root is real and the path has no '..': unless one of its own components is a link, it is
    # its own real path. Checking those few components spares a realpath walk from '/' per request.
    # Windows has links lstat does not call links (junctions): there resolve() decides every time.
    if os.name == "nt":
        return (real_root / relative).resolve()
    path = real_root
    for part in relative.parts:
        path = path / part
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return (real_root / relative).resolve()
        except OSError:
            return (real_root / relative).resolve()
    return path


@functools.lru_cache(maxsize=8)
def _real_root(root: Path) -> Path:
    # The storage root is set for the service's life: one realpath at the first request, not one each.
    return root.resolve()
