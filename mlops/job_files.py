"""Reading the files a job controls without trusting them: no links, regular files only, bounded reads.

A job can rename, replace or create any name inside its folder while the executor reads it: a link
to the key file or to /dev/zero in place of an output, a FIFO in place of a log. So every component
below a trusted root is opened relative to its parent's descriptor with O_NOFOLLOW, a file is opened
non-blocking and checked to be a regular file before a byte is read, and every read has a bound.
Where the platform has no descriptor-relative open (Windows), each component is checked with lstat
first: a weaker check, stated in docs/operations.md, as Windows jobs are not isolated anyway.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Iterator

_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY
_DIR_FLAGS = os.O_RDONLY | _NOFOLLOW | _DIRECTORY | _CLOEXEC
_CHUNK = 1 << 16


class UnsafeFile(OSError):
    """A path under a job's folder is a link, a FIFO, a device or a folder where a regular file belongs."""


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


@contextmanager
def _opened(root: Path, relative: str | PurePath, flags: int, mode: int = 0o600) -> Iterator[int]:
    """Yield a descriptor of root/relative, opened without following any link below root."""
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
        if stat.S_ISLNK(info.st_mode) or getattr(info, "st_reparse_tag", 0):
            raise UnsafeFile(f"{path} is a link")
    return os.open(path, flags & ~(_NONBLOCK | _NOFOLLOW), mode)


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


def regular_files(root: Path, folder: str | PurePath, limit: int) -> tuple[list[FileEntry], bool]:
    """List up to `limit` regular files below root/folder, links neither followed nor listed.

    Returns the entries (paths relative to root, sorted) and whether more files were left out.
    """
    if not _DIR_FD:
        return _regular_files_by_lstat(root, root / folder, limit)
    parts = _parts(folder)
    entries: list[FileEntry] = []
    try:
        parent = _open_folder(root, parts[:-1])
    except (FileNotFoundError, NotADirectoryError, UnsafeFile):
        return [], False
    try:
        # fwalk walks by descriptors from the parent's descriptor and refuses a linked top folder,
        # so a folder renamed or replaced mid-walk cannot lead it outside.
        walk = os.fwalk(parts[-1], dir_fd=parent, follow_symlinks=False)
        for current, _dirs, files, dir_fd in walk:
            for name in sorted(files):
                try:
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                if len(entries) == limit:
                    walk.close()
                    return sorted(entries, key=lambda entry: entry.relative), True
                entries.append(FileEntry(PurePath(*parts[:-1], current, name).as_posix(), info.st_size))
    finally:
        os.close(parent)
    return sorted(entries, key=lambda entry: entry.relative), False


def remove_tree(path: Path) -> None:
    """Remove a file, FIFO, link or folder tree at path; a link is removed itself, never followed."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or getattr(info, "st_reparse_tag", 0):
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
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _regular_files_by_lstat(root: Path, start: Path, limit: int) -> tuple[list[FileEntry], bool]:
    entries: list[FileEntry] = []
    pending = [start] if start.is_dir() and not start.is_symlink() else []
    while pending:
        with os.scandir(pending.pop()) as listing:
            for item in listing:
                if item.is_symlink() or getattr(item.stat(follow_symlinks=False), "st_reparse_tag", 0):
                    continue
                if item.is_dir(follow_symlinks=False):
                    pending.append(Path(item.path))
                elif item.is_file(follow_symlinks=False):
                    if len(entries) == limit:
                        return sorted(entries, key=lambda entry: entry.relative), True
                    entries.append(FileEntry(Path(item.path).relative_to(root).as_posix(),
                                             item.stat(follow_symlinks=False).st_size))
    return sorted(entries, key=lambda entry: entry.relative), False
