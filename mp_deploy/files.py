"""Files from untrusted places, read and written safely: the one module that opens an input or replaces an output.

- Nothing is opened that is not a regular file: `open_regular` opens without blocking (a FIFO or a device opens
  at once instead of waiting for a writer) and checks what it opened before reading a byte, so a special file
  can neither hang a reader nor be read as data.
- Nothing is replaced that is not a regular file: `atomic_write` refuses an existing target that is a device,
  FIFO, socket, folder or symbolic link (as root, a rename onto /dev/full would replace the device node).
- Declared sizes are not trusted: `read_text` / `read_json` read at most a stated number of bytes, and a JSON
  document nested past a depth or holding a number too long to convert is refused with one line.
- Temporary names fit wherever the final name fits: the temporary file has the final name, inside a hidden
  folder with a short name beside it.

Imports only mp_deploy.errors.
"""
from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from mp_deploy.errors import DataError, UsageError

MAX_JSON_BYTES = 64 << 20  # a manifest, sidecar, annotation or boxes file larger than this is refused
MAX_JSON_DEPTH = 64  # nesting of a JSON document (ours nest at most 6)

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))

_UMASK = os.umask(0o022)  # read the process umask (there is only set-and-get) and put it back
os.umask(_UMASK)


class NotRegularFileError(DataError):
    """A path that names a folder, FIFO, device, socket or symbolic link where a regular file belongs."""


def kind(mode: int) -> str:
    """'a FIFO', 'a character device', ... for a stat mode that is not a regular file's ('a regular file')."""
    return next((what for test, what in _KINDS if test(mode)), "a regular file" if stat.S_ISREG(mode)
                else "a special file")


def special_kind(path: str | os.PathLike) -> str | None:
    """None for a regular file (or a link to one), else what the path is ('a FIFO', 'missing', 'a symbolic link
    loop', ...). Never opens the path, so it cannot block."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing" if not os.path.islink(path) else "a broken symbolic link"
    except OSError as e:
        return "a symbolic link loop" if e.errno == errno.ELOOP else f"unreadable ({e.strerror})"
    return None if stat.S_ISREG(mode) else kind(mode)


def open_regular(path: str | os.PathLike) -> io.BufferedReader:
    """`path` opened for binary reading if it is a regular file (symbolic links followed), else
    NotRegularFileError naming what it is; DataError when it cannot be opened. Never blocks in open."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRegularFileError(f"{path}: not a regular file (a symbolic link loop)") from None
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"{path}: not a regular file ({kind(mode)})")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | os.PathLike, what: str = "") -> Path:
    """`path` if it is a regular file, else NotRegularFileError (or DataError when missing) naming `what`."""
    found = special_kind(path)
    if found == "missing":
        raise DataError(f"{what}{path}: no such file")
    if found is not None:
        raise NotRegularFileError(f"{what}{path}: not a regular file ({found})")
    return Path(path)


def read_bytes(path: str | os.PathLike, limit: int = MAX_JSON_BYTES) -> bytes:
    """The file's bytes, if it is a regular file of at most `limit` bytes (checked while reading, not from the
    size it states)."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{path}: more than {limit} bytes, larger than such a file may be")
    return data


def read_text(path: str | os.PathLike, limit: int = MAX_JSON_BYTES) -> str:
    try:
        return read_bytes(path, limit).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def parse_json(text: str | bytes, where: str):
    """A JSON document, or DataError naming `where`: malformed, nested deeper than MAX_JSON_DEPTH, NaN or
    infinity spelled out, or a number beyond a double's range (1e400, 309 digits and more: the C++ library's
    reader refuses the same)."""
    if _depth(text) > MAX_JSON_DEPTH:
        raise DataError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and int conversion past sys.get_int_max_str_digits()
        raise DataError(f"{where}: not valid JSON ({e})") from None


def read_json(path: str | os.PathLike, limit: int = MAX_JSON_BYTES):
    """A regular file of at most `limit` bytes parsed as JSON (parse_json's checks)."""
    return parse_json(read_text(path, limit), str(path))


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


MAX_NUMBER_DIGITS = 308  # beyond a double's range: what the C++ reader (nlohmann) refuses as overflow


def _finite_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} is beyond a double's range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number of {len(text.lstrip('-'))} digits is beyond a double's range")
    return int(text)


def _depth(text: str | bytes) -> int:
    """The deepest nesting of brackets outside strings (a linear scan, so a hostile document cannot recurse)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


# ------------------------------------------------------------------ writing

def check_replaceable(path: str | os.PathLike) -> Path:
    """`path` if nothing is there or a regular file is (never a device, FIFO, socket, folder or symbolic link:
    lstat, not following links), else NotRegularFileError."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as e:
        raise UsageError(f"{path}: cannot check what is there ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(f"{path}: {kind(mode)} is there; refusing to replace what is not a regular file")
    return path


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call write(tmp) and rename tmp onto `path`: a crash or a kill leaves no half-written file, and an existing
    target that is not a regular file is refused before anything is written (check_replaceable).

    tmp has the final file name (some writers derive internal names or insist on the suffix: AOTInductor names
    the package's root folder after it), inside a hidden temporary folder with a short name beside `path`, so it
    fits wherever the final name fits; the file is created by the writer; a file it creates private (safetensors
    writes 0600) gets the process umask's mode as well.
    """
    path = check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(dir=path.parent, prefix=".tmp-")
    try:
        tmp = os.path.join(folder, path.name)
        write(tmp)
        if os.path.isfile(tmp):
            os.chmod(tmp, os.stat(tmp).st_mode & 0o111 | 0o666 & ~_UMASK)
        check_replaceable(path)  # again: something may have appeared there while writing
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
