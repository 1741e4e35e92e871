"""The run's event log. The host redacts secrets and audits every message."""

from wit_world.imports import log as _raw


def trace(message: str) -> None:
    _raw.write(_raw.Level.TRACE, message)


def debug(message: str) -> None:
    _raw.write(_raw.Level.DEBUG, message)


def info(message: str) -> None:
    _raw.write(_raw.Level.INFO, message)


def warn(message: str) -> None:
    _raw.write(_raw.Level.WARN, message)


def error(message: str) -> None:
    _raw.write(_raw.Level.ERROR, message)
