"""Small helpers shared across the package (no Detectron2 import)."""
import json
import os
import tempfile

from .faults import fault_point


def atomic_write(path, write):
    """Call ``write(binary file)`` on a temporary file beside ``path``, then rename it to
    ``path``: readers (and a run killed meanwhile) see the old file or the new one, never half
    of it; a failed write leaves no temporary file behind."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would not
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        fault_point("replace:" + os.path.basename(path))  # test-only (IMAGESCORE_FAULT)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    atomic_write(path, lambda f: f.write(data))


def json_plain(obj):
    """Results dicts hold numpy floats and OrderedDicts; make them JSON-plain."""
    if isinstance(obj, dict):
        return {str(k): json_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()
    return obj


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, indent=2):
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def read_json_object(path, what, fix, error=RuntimeError):
    """The JSON object in ``path``; ``error`` naming ``what`` the file is, the problem and
    ``fix`` when it cannot be read, does not parse, or is not an object."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError
        # are ValueErrors; RecursionError: nesting deeper than the decoder's stack
        raise error(f"Cannot read {what} {path}: {e}. {fix}") from e
    if not isinstance(data, dict):
        raise error(f"{what[0].upper() + what[1:]} {path} is not a JSON object. {fix}")
    return data
