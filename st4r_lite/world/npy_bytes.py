"""Read an object array of ``bytes`` from an ``.npy`` stream without unpickling it.

The official TAPVid-3D / WorldTrack release stores ``images_jpeg_bytes`` as a numpy *object* array of ``bytes``
(one JPEG per frame). numpy writes such arrays as a pickle, and loading a pickle (numpy's ``allow_pickle`` option) runs any
code it names (``os.system``, ``builtins.exec``, ...): a downloaded file could run its payload. So this package
never unpickles. Instead :func:`read_bytes_array` *parses* the pickle's opcodes with ``pickletools.genops`` (a
pure parser: it imports nothing and calls nothing) and interprets only the handful of opcodes that numpy emits
for an array of bytes: strings, bytes, numbers, tuples, lists, the memo, and the three names numpy refers to
(``numpy[._]core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``) kept as inert symbols, never
resolved. Anything else (another global, another opcode, an element that is not ``bytes``) is refused with an
:class:`~st4r_lite.errors.InputError` naming the key; nothing in the file is ever executed.

Our own files need none of this: they store the frames as a fixed-width byte-string array (``S<n>``), which
``np.load(allow_pickle=False)`` reads directly (numpy strips the trailing NUL padding, which never changes a
JPEG: every JPEG ends with the EOI marker ``FF D9``).
"""

from __future__ import annotations

import io
import math
import pickletools
from typing import IO, NamedTuple

import numpy as np

from st4r_lite.errors import InputError

__all__ = ["read_bytes_array"]

# the only names numpy's pickle of an object array refers to; kept as symbols, never imported
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}
_PUSH_ARG = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINBYTES", "BINBYTES",
             "BINBYTES8", "BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG", "BINFLOAT",
             "SHORT_BINSTRING", "BINSTRING", "STRING"}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


class _Global(NamedTuple):
    module: str
    name: str


class _Call:
    """``func(*args)`` as the pickle describes it (never called), and the state a BUILD gives it."""

    def __init__(self, func: _Global, args: tuple):
        self.func, self.args, self.state = func, args, None


def _refuse(key: str, why: str) -> InputError:
    return InputError(
        f"{key} is a pickled object array that is not a plain array of bytes ({why}); st4r-lite never "
        "unpickles files (a pickle can run code). Re-save the frames as a byte-string array, e.g. "
        "np.array(list_of_jpeg_bytes, dtype='S'), in an environment you trust"
    )


def _global(key: str, module, name) -> _Global:
    if (module, name) not in _ALLOWED_GLOBALS:
        raise _refuse(key, f"it refers to {module}.{name}")
    return _Global(module, name)


def _interpret(key: str, stream: IO[bytes]):
    """Run the opcodes of one pickle on a stack of plain values; returns what STOP leaves on the stack."""
    stack: list = []
    marks: list[int] = []
    memo: dict[int, object] = {}

    def pop_mark() -> list:
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            break
        if name in _PUSH_ARG:
            stack.append(arg)
        elif name in _CONSTANTS:
            stack.append(_CONSTANTS[name])
        elif name == "MARK":
            marks.append(len(stack))
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name in ("EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
            n = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}[name]
            items = tuple(stack[len(stack) - n:]) if n else ()
            del stack[len(stack) - n:]
            stack.append(items)
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name in ("APPEND", "APPENDS"):
            items = pop_mark() if name == "APPENDS" else [stack.pop()]
            if not isinstance(stack[-1], list):
                raise _refuse(key, "items appended to something that is not a list")
            stack[-1].extend(items)
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[int(arg)])
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            stack.append(_global(key, module, attr))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            stack.append(_global(key, module, attr))
        elif name == "REDUCE":
            args, func = stack.pop(), stack.pop()
            if not isinstance(func, _Global) or not isinstance(args, tuple):
                raise _refuse(key, "a call of something that is not a known name")
            if func == ("_codecs", "encode"):  # protocol 2 writes bytes as _codecs.encode(text, "latin1")
                if len(args) != 2 or not isinstance(args[0], str) or args[1] != "latin1":
                    raise _refuse(key, "an unexpected _codecs.encode call")
                stack.append(args[0].encode("latin1"))
            else:
                stack.append(_Call(func, args))
        elif name == "BUILD":
            state = stack.pop()
            if not isinstance(stack[-1], _Call):
                raise _refuse(key, "state given to something that is not an array or dtype")
            stack[-1].state = state
        else:
            raise _refuse(key, f"pickle opcode {name}")
    if len(stack) != 1:
        raise _refuse(key, "the pickle does not describe one array")
    return stack[0]


def read_bytes_array(stream: IO[bytes], key: str) -> np.ndarray:
    """The object array of ``bytes`` stored as ``key`` in the ``.npy`` ``stream``, read without unpickling.

    Returns a fixed-width byte-string array (``S<n>``) of the array's shape (T,) for T frames. Raises
    InputError (naming ``key``) when the stream is not an ``.npy`` of object dtype holding only ``bytes``."""
    try:
        version = np.lib.format.read_magic(stream)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = reader(stream)
    except (ValueError, OSError) as err:
        raise InputError(f"{key} is not a readable .npy array ({err})") from err
    if dtype != np.dtype(object):
        raise InputError(f"{key} has dtype {dtype}, expected an array of JPEG bytes")
    try:
        result = _interpret(key, io.BytesIO(stream.read()))
    except InputError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as err:  # malformed or truncated opcodes
        raise _refuse(key, f"a malformed pickle: {err}") from err
    state = result.state if isinstance(result, _Call) else None
    if (not isinstance(result, _Call) or result.func.name != "_reconstruct" or not isinstance(state, tuple)
            or len(state) != 5 or not isinstance(state[4], list)):
        raise _refuse(key, "the pickle is not a numpy array")
    items = state[4]
    if not all(isinstance(b, bytes) for b in items):
        kinds = sorted({type(b).__name__ for b in items if not isinstance(b, bytes)})
        raise _refuse(key, f"it holds {', '.join(kinds)} objects, not bytes")
    if len(items) != math.prod(shape):
        raise _refuse(key, f"{len(items)} items for the shape {shape}")
    width = max((len(b) for b in items), default=1)
    return np.array(items, dtype=f"S{max(width, 1)}").reshape(shape)
