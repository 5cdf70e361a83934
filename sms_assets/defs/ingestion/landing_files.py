"""The landing folder's entries as files: which names may be batches, and reading, moving and writing
them without following a link out of the folder.

A batch is a regular file with one name, directly in the landing folder (or in its processed/ and
quarantine/ folders, which must be real folders, never links). Everything is opened relative to a
folder descriptor with O_NOFOLLOW, so a symlink swapped in after a check is not followed, and with
O_NONBLOCK, so a FIFO cannot hang a run; the open file is then checked with fstat before a byte is
read. A refusal names the file, what it is and the limit it breaks; never its contents.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BATCH_SUFFIX = ".tsv"
# One batch is read whole into memory. 16 MiB holds some 2,000 messages of the longest text allowed
# (MAX_TEXT_CHARS, up to 4 bytes a character) or about 100,000 ordinary ones.
DEFAULT_MAX_BATCH_BYTES = 16 * 1024 * 1024
REASON_MAX_BYTES = 64 * 1024
NAME_MAX_BYTES = 255  # the longest file name Linux and macOS file systems take
SHOWN_CHARS = 40  # the most of a value an error message quotes

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class BatchError(ValueError):
    """A landed batch, or a name for one, is refused; the message names the file and line, not its text."""


def shown(value: str, limit: int = SHOWN_CHARS) -> str:
    """`value` for an error message: quoted with control characters escaped, and cut short."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


def batch_name_problem(name: str) -> str | None:
    """Why `name` cannot name a batch, or None: a batch is one plain file name ending in .tsv.

    The one rule for names from a folder listing and from run config: no path separator (so no `..`
    step either), no NUL or other control character, no leading dot (`.`, `..`, hidden files and a
    producer's partial file), valid UTF-8 and at most 255 bytes.
    """
    if not name:
        return "is empty"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if name.startswith("."):
        return "starts with a dot (hidden, or still being written)"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return "holds a control character"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if size > NAME_MAX_BYTES:
        return f"is longer than {NAME_MAX_BYTES} bytes"
    if not name.endswith(BATCH_SUFFIX):
        return f"does not end in {BATCH_SUFFIX}"
    return None


def check_batch_name(name: str) -> str:
    """`name` when it may name a batch; else BatchError naming it and why."""
    problem = batch_name_problem(name)
    if problem:
        raise BatchError(
            f"batch name {shown(name, NAME_MAX_BYTES)} {problem}: a batch is named by a file name in "
            f"the landing folder ending in {BATCH_SUFFIX}, without a path"
        )
    return name


@contextmanager
def opened_folder(folder: Path, follow: bool, create: bool = False) -> Iterator[int]:
    """A descriptor of `folder`. With follow=False the folder must be a folder itself, not a link to one."""
    try:
        if create:
            os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, _FOLDER if follow else _FOLDER | os.O_NOFOLLOW)
    except OSError as exc:
        link = exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST) and os.path.islink(folder)
        raise BatchError(
            f"{folder} is a symbolic link, not a folder of the landing folder"
            if link
            else f"{folder} cannot be opened as a folder: {exc.strerror}"
        ) from None
    try:
        yield fd
    finally:
        os.close(fd)


def lexists(folder_fd: int, name: str) -> bool:
    """Whether `name` is an entry of the folder (of any kind; a link is not followed)."""
    try:
        os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _refusal(info: os.stat_result) -> str | None:
    mode = info.st_mode
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    for test, kind in kinds:
        if test(mode):
            return f"is {kind}, not a regular file"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    if info.st_nlink != 1:
        # A hard link would let the folder read a file that lives elsewhere under another name.
        return f"has {info.st_nlink} names (hard links); a batch is a file of its own"
    return None


def read_regular(folder_fd: int, name: str, where: str, max_bytes: int) -> bytes:
    """The bytes of the regular file `name` in the folder, at most `max_bytes`; else BatchError."""
    try:
        before = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise BatchError(f"{where}: no such file (moved away while the run read the folder)") from None
    # Checked before opening: opening a device may act on it.
    refusal = _refusal(before)
    if refusal:
        raise BatchError(f"{where} {refusal}")
    try:
        fd = os.open(name, _READ, dir_fd=folder_fd)
    except OSError as exc:
        swapped = "was replaced by a symbolic link" if exc.errno == errno.ELOOP else "cannot be opened"
        raise BatchError(f"{where} {swapped}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(fd)
        refusal = _refusal(opened)
        if refusal is None and (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            refusal = "was replaced by another file while it was opened"
        if refusal is None and opened.st_size > max_bytes:
            refusal = too_large(opened.st_size, max_bytes)
        if refusal:
            raise BatchError(f"{where} {refusal}")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BatchError(f"{where} grew past the limit of {max_bytes:,} bytes a batch while it was read")
    return data


def too_large(size: int, max_bytes: int) -> str:
    return f"is {size:,} bytes, above the limit of {max_bytes:,} bytes a batch (LandingResource.max_bytes)"


def move(name: str, from_fd: int, to_fd: int) -> None:
    """Move the entry `name` (itself: a link is moved, never followed) from one folder to another."""
    os.replace(name, name, src_dir_fd=from_fd, dst_dir_fd=to_fd)


def write_text(folder_fd: int, name: str, text: str) -> None:
    """Write `name` in the folder whole or not at all, replacing (never following) what is there."""
    partial = f".{name}.{os.getpid()}.part"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial, dir_fd=folder_fd)  # left by a process that died writing it
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(partial, flags, 0o644, dir_fd=folder_fd)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
