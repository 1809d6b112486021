"""SCHEDULER_SERIALIZER for the Redis queues: JSON, never pickle.

`dumps` takes the dict of `Request.to_dict(spider=…)` (callbacks as method names) and refuses
what JSON cannot carry (bytes are carried as {"__bytes__": base64}). `loads` refuses anything
that is not such a dict: a planted pickle or other garbage is an error, never executed."""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["UnserializableRequest", "dumps", "loads"]

ALLOWED_CLASSES = {
    "scrapy.http.request.Request",
    "scrapy.Request",
    "scrapy.http.Request",
    "scrapy.http.request.form.FormRequest",
    "scrapy.http.request.json_request.JsonRequest",
}


class UnserializableRequest(ValueError):
    """A request cannot be put in the cluster queue (what it carries is not JSON)."""


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        if "__bytes__" in value:
            raise TypeError("a dict with a '__bytes__' key")
        out = {}
        for key, item in value.items():
            if isinstance(key, bytes):
                key = key.decode("latin-1")
            if not isinstance(key, str):
                raise TypeError(f"a {type(key).__name__} dict key")
            out[key] = _encode(item)
        return out
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"a {type(value).__name__} ({value!r:.60})")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__bytes__"} and isinstance(value["__bytes__"], str):
            return base64.b64decode(value["__bytes__"], validate=True)
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def dumps(obj: dict[str, Any]) -> bytes:
    try:
        encoded = _encode(obj)
        return json.dumps(encoded, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise UnserializableRequest(
            f"request <{obj.get('url')}> cannot be queued as JSON: {exc}"
        ) from exc


def loads(data: bytes | str) -> dict[str, Any]:
    """The request dict; ValueError for anything else (pickles included)."""
    if isinstance(data, bytes):
        if data[:1] == b"\x80":
            raise ValueError("a pickled payload in the queue: refused")
        text = data.decode("utf-8")
    else:
        text = data
    obj = _decode(json.loads(text))
    if not isinstance(obj, dict) or not isinstance(obj.get("url"), str):
        raise ValueError("not a request (a JSON object with a url)")
    for name in ("callback", "errback"):
        if obj.get(name) is not None and not isinstance(obj[name], str):
            raise ValueError(f"{name} is not a method name")
    if "_class" in obj and obj["_class"] not in ALLOWED_CLASSES:
        raise ValueError(f"request class {obj['_class']!r} is not allowed")
    for name, kind in (("meta", dict), ("cb_kwargs", dict), ("headers", dict)):
        if obj.get(name) is not None and not isinstance(obj[name], kind):
            raise ValueError(f"{name} is not a {kind.__name__}")
    return obj
