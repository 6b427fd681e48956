"""Result files written atomically, and output paths checked before any work.

A result file is written to a temporary file in its own directory and then renamed
over the target (`os.replace`, atomic on POSIX and Windows within one file system),
so an interrupted run leaves either the previous file or the complete new one, never
an empty or half-written one. Shared by `keras-kd reproduce` and the benchmarks.

    with atomic_output("runs/results.json", "w") as file:
        json.dump(payload, file)
    atomic_write_text("runs/results.md", markdown)
    atomic_write_bytes("runs/picture.png", png_bytes)
    check_output_dir("runs/reproduce")   # before training: a directory we can write
    check_output_file("bench.json")      # before benchmarking: a file we can write
"""

import contextlib
import os
import pathlib
import tempfile


@contextlib.contextmanager
def atomic_output(path, mode="w", encoding="utf-8"):
    """A file object for `path` that replaces it only when the block succeeds.

    Args:
        path: the target file; its directory must exist.
        mode: "w" (text, default) or "wb" (binary).
        encoding: text encoding, default "utf-8" (ignored for "wb").

    The data is flushed and fsync'ed before the rename; on any exception the
    temporary file is removed and the target is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}.")
    path = pathlib.Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode, **({} if mode == "wb" else {"encoding": encoding})) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file 0600; a result file gets the usual permissions.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_text(path, text, encoding="utf-8"):
    """Writes `text` to `path` atomically (see `atomic_output`)."""
    with atomic_output(path, "w", encoding=encoding) as file:
        file.write(text)


def atomic_write_bytes(path, data):
    """Writes `data` (bytes) to `path` atomically (see `atomic_output`)."""
    with atomic_output(path, "wb") as file:
        file.write(data)


def check_output_dir(path, flag="--output"):
    """Creates directory `path` if needed and checks that files can be written in it.

    Raises:
        ValueError: naming `flag`, if `path` is a file, sits under a file, or is
            not writable; raised before any training so no work is lost.
    """
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file, not a directory; give a directory.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe_writable(path)
    except OSError as error:
        raise ValueError(
            f"{flag} {str(path)!r} is not a writable directory ({error.strerror or error}); "
            "give a directory you can write to."
        ) from None
    return path


def check_output_file(path, flag="--json"):
    """Checks that file `path` can be written: its directory exists and is writable,
    and `path` is not a directory. Creates nothing.

    Raises:
        ValueError: naming `flag`, what is wrong and what to do.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a directory; give a file name.")
    if not path.parent.is_dir():
        raise ValueError(
            f"{flag} {str(path)!r}: directory {str(path.parent)!r} does not exist; create it "
            "or give another path."
        )
    try:
        _probe_writable(path.parent)
    except OSError as error:
        raise ValueError(
            f"{flag} {str(path)!r}: directory {str(path.parent)!r} is not writable "
            f"({error.strerror or error})."
        ) from None
    return path


def _probe_writable(directory):
    # os.access is unreliable (root, ACLs, read-only mounts): try the real thing.
    handle, probe = tempfile.mkstemp(prefix=".keras-kd-write-check.", dir=directory)
    os.close(handle)
    os.unlink(probe)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
