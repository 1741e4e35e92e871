"""The run's inputs as plain Python values (validated by the host against the manifest)."""

from typing import Dict, List, Optional, Union

from wit_world.imports import params as _raw

Value = Union[str, int, float, bool, List[str]]


def _plain(value) -> Value:
    return value.value


def get(name: str) -> Optional[Value]:
    """The input ``name`` as str / int / float / bool / list[str], or None if absent."""
    value = _raw.get(name)
    return None if value is None else _plain(value)


def all() -> Dict[str, Value]:
    """Every input, by name."""
    return {p.name: _plain(p.value) for p in _raw.all()}


def text(name: str, default: Optional[str] = None) -> str:
    """A string input; raises ValueError when it is missing (and no default) or not text."""
    return _typed(name, str, default)


def integer(name: str, default: Optional[int] = None) -> int:
    """An integer input."""
    return _typed(name, int, default)


def flag(name: str, default: Optional[bool] = None) -> bool:
    """A boolean input."""
    return _typed(name, bool, default)


def text_list(name: str, default: Optional[List[str]] = None) -> List[str]:
    """A string-list input."""
    return _typed(name, list, default)


def _typed(name, kind, default):
    value = get(name)
    if value is None:
        if default is None:
            raise ValueError(f"input `{name}` is required")
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"input `{name}` is {type(value).__name__}, expected {kind.__name__}")
    return value
