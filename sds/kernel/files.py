"""Naming files durably on a local filesystem: creating a file under a name only if the name
is free (`link_new`), and making a file's content (`sync_file`) and its new name
(`sync_folder`) survive a power cut.

The file registry and a local batch run write a complete hidden file, then link(2) it to its
name: unlike a rename, link refuses a name that exists, so a writer that loses a race never
replaces the winner's file. Some filesystems have no hard links (FAT and exFAT drives, some
network and FUSE mounts), and link(2) then fails with a bare "Operation not permitted"; this
names the cause and what to do instead.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from sds.kernel.errors import SdsError

# What link(2) answers on a filesystem without hard links: EPERM on Linux for FAT, exFAT and SMB
# mounts (the source is our own new file, so the protected_hardlinks rule is not the cause),
# EOPNOTSUPP / ENOTSUP or ENOSYS elsewhere.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def link_new(source: str | Path, target: Path, *, error: type[SdsError]) -> None:
    """Give the complete file `source` the name `target` if no file has it: FileExistsError if
    one does (the caller's race to report). Where the filesystem has no hard links, `error` says
    so; any other failure is link(2)'s own OSError."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        raise error(
            f"{target.parent}: this filesystem has no hard links ({exc.strerror}), which sds "
            "needs to create a file only if its name is free; keep this folder on a local "
            "disk (ext4, XFS, APFS) or use an s3:// location"
        ) from None


def sync_file(path: Path) -> None:
    """Flush `path`'s written content to disk, whichever descriptor wrote it (fsync applies to
    the file): before it takes its name, so a power cut leaves the content, not an empty file."""
    _fsync(path, os.O_RDONLY, folder=False)


def sync_folder(folder: Path) -> None:
    """Flush `folder`'s entries to disk: after a rename or a link into it, the new name survives
    a power cut (the file's own fsync keeps its content, not its name). A filesystem that cannot
    sync a folder (EINVAL, EBADF: some network and FUSE mounts) is left as it is, as
    PostgreSQL's fsync_fname leaves it: its names are as durable as it makes them."""
    _fsync(folder, os.O_RDONLY | os.O_DIRECTORY, folder=True)


def _fsync(path: Path, flags: int, *, folder: bool) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:
        if not folder or exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)
