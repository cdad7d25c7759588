"""Reading tierflow's JSON and YAML documents with errors that name the file."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tierflow.errors import TierflowError

T = TypeVar("T")


def read_text(path: str | Path, *, what: str, error: type[TierflowError]) -> str:
    file = Path(path)
    try:
        return file.read_text()
    except OSError as exc:
        raise error(f"cannot read {what} {file}: {exc.strerror}") from exc


def parse_json_object(text: str, *, source: str, error: type[TierflowError]) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{source}: expected a JSON object")
    return data


def read_json_object(path: str | Path, *, what: str, error: type[TierflowError]) -> dict[str, Any]:
    """The JSON object in ``path``; ``error`` names the file when it is missing or malformed."""
    text = read_text(path, what=what, error=error)
    return parse_json_object(text, source=str(path), error=error)


def read_yaml_mapping(path: str | Path, *, what: str, error: type[TierflowError]) -> dict[str, Any]:
    """The YAML mapping in ``path``; ``error`` names the file when it is missing or malformed."""
    text = read_text(path, what=what, error=error)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping")
    return data


def check_version(
    data: Mapping[str, Any],
    key: str,
    expected: int,
    *,
    source: str,
    error: type[TierflowError],
) -> None:
    """Refuse a document of another format version, naming the file and both versions."""
    version = data.get(key)
    if version != expected:
        raise error(f"{source}: {key} is {version!r}; this tierflow reads {expected}")


def parse_entries(
    data: Mapping[str, Any],
    key: str,
    parse: Callable[[Any], T],
    *,
    source: str,
    error: type[TierflowError],
) -> list[T]:
    """``parse`` applied to every item of the list ``data[key]``; an error names the item
    (``key.INDEX``) and the missing field or the malformed value."""
    if not isinstance(data.get(key), list):
        raise error(f"{source}: {key} must be a list")
    entries: list[T] = []
    for index, entry in enumerate(data[key]):
        try:
            entries.append(parse(entry))
        except KeyError as exc:
            raise error(f"{source}: {key}.{index}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise error(f"{source}: {key}.{index}: malformed: {exc}") from None
    return entries
