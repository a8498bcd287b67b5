"""Task definitions, triggers and options: what a task is, apart from running it."""

from __future__ import annotations

import inspect
import json
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic

from .errors import InvalidInput, InvalidResult, NotSupported

if TYPE_CHECKING:
    from .conductor import Conductor

Retention = dict[str, float] | int | bool
Handler = Callable[..., Any]
P = TypeVar("P")


def check_name(input: str, value: object, max_len: int) -> str:
    """Return `value` if it is a usable task or queue name, else raise InvalidInput."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(input, f"must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise InvalidInput(input, f"must not contain NUL characters, got {value!r}")
    try:
        encoded = value.encode()
    except UnicodeEncodeError:
        raise InvalidInput(input, f"must be valid UTF-8 text (no lone surrogates), got {value!r}") from None
    if len(encoded) > max_len:
        raise InvalidInput(input, f"must be at most {max_len} bytes")
    return value


NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an escaped NUL, not an escaped backslash + "u0000"


def to_json(value: Any) -> str:
    """JSON text that Postgres's jsonb accepts: no NaN/Infinity, no NUL characters."""
    text = json.dumps(value, allow_nan=False)
    if "\\u0000" in text and NUL_ESCAPE.search(text):
        raise ValueError("JSON text cannot contain NUL characters (\\u0000)")
    return text


def _check_model(input: str, model: object) -> type[pydantic.BaseModel] | None:
    if model is None or (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
        return model
    raise InvalidInput(input, f"must be a pydantic model class or None, got {model!r}")


@dataclass(frozen=True)
class TaskDefinition(Generic[P]):
    """A task's name and its payload/result models, shareable by producers and workers."""

    name: str
    payload: type[pydantic.BaseModel] | None = None
    returns: type[pydantic.BaseModel] | None = None

    def dump_payload(self, payload: Any) -> dict[str, Any]:
        """Validate a payload for enqueue and return its JSON object; raises InvalidInput."""
        if self.payload is not None:
            try:
                model = payload if isinstance(payload, self.payload) else self.payload.model_validate(payload)
            except pydantic.ValidationError as exc:
                raise InvalidInput("payload", f"does not match {self.payload.__name__}: {exc}") from exc
            dumped: dict[str, Any] = model.model_dump(mode="json")
            try:
                to_json(dumped)
            except ValueError as exc:
                raise InvalidInput("payload", f"is not valid JSON for Postgres: {exc}") from exc
            return dumped
        if isinstance(payload, pydantic.BaseModel):
            return payload.model_dump(mode="json")
        if not isinstance(payload, dict):
            raise InvalidInput("payload", f"must be a JSON object (dict), got {type(payload).__name__}")
        try:
            to_json(payload)
        except (TypeError, ValueError) as exc:
            raise InvalidInput("payload", f"is not valid JSON for Postgres: {exc}") from exc
        return payload

    def parse_payload(self, raw: Any) -> Any:
        """The payload as the handler sees it: the model instance, or the raw JSON."""
        if self.payload is None:
            return raw
        return self.payload.model_validate(raw)

    def dump_result(self, result: Any) -> str:
        """Serialize a handler's result to JSON text; raises InvalidResult."""
        if result is None and self.returns is None:
            return "null"
        if self.returns is not None:
            try:
                model = result if isinstance(result, self.returns) else self.returns.model_validate(result)
            except pydantic.ValidationError as exc:
                raise InvalidResult(
                    f"task {self.name!r} returned a value that does not match {self.returns.__name__}: {exc}"
                ) from exc
            result = model.model_dump(mode="json")
        elif isinstance(result, pydantic.BaseModel):
            result = result.model_dump(mode="json")
        try:
            return to_json(result)
        except (TypeError, ValueError) as exc:
            raise InvalidResult(
                f"task {self.name!r} returned a value that is not valid JSON for Postgres: {exc}"
            ) from exc

    def parse_result(self, raw: Any) -> Any:
        """A stored result as callers see it: the `returns` model, or the raw JSON."""
        if self.returns is None or raw is None:
            return raw
        return self.returns.model_validate(raw)


def define_task(
    name: str,
    payload: type[pydantic.BaseModel] | None = None,
    returns: type[pydantic.BaseModel] | None = None,
) -> TaskDefinition[Any]:
    """Declare a task by name with optional pydantic models for its payload and result."""
    return TaskDefinition(
        check_name("task name", name, 200),
        _check_model("payload", payload),
        _check_model("returns", returns),
    )


@dataclass(frozen=True)
class Invocable:
    """Trigger: the task can be invoked by name (the default)."""


def check_retention(input: str, value: object) -> Retention:
    """Return a retention setting if valid: {"days": N >= 0}, 0, or False."""
    if value is False or (type(value) is int and value == 0):
        return value
    if (
        isinstance(value, dict)
        and set(value) == {"days"}
        and isinstance(value["days"], int | float)
        and not isinstance(value["days"], bool)
        and 0 <= value["days"] <= 36500
    ):
        return value
    raise InvalidInput(input, f'must be {{"days": N}} with 0 <= N <= 36500, 0, or False; got {value!r}')


WINDOW_TIME = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]")


def check_window(value: object) -> tuple[str, str, str] | None:
    """Return a time window as (start, end, IANA zone) if valid: ("HH:MM", "HH:MM") or
    ("HH:MM", "HH:MM", "Europe/Berlin"); start and end differ; end < start crosses midnight."""
    if value is None:
        return None
    shape = 'must be None, ("HH:MM", "HH:MM") or ("HH:MM", "HH:MM", "<IANA time zone>")'
    if not isinstance(value, tuple | list) or len(value) not in (2, 3):
        raise InvalidInput("window", f"{shape}, got {value!r}")
    if not all(isinstance(item, str) for item in value):
        raise InvalidInput("window", f"{shape}, got {value!r}")
    start, end = value[0], value[1]
    zone = value[2] if len(value) == 3 else "UTC"
    for item in (start, end):
        if not WINDOW_TIME.fullmatch(item):
            raise InvalidInput("window", f"{item!r} is not a time HH:MM between 00:00 and 23:59 ({shape})")
    if start == end:
        raise InvalidInput(
            "window", f"start and end must differ, got {value!r} (no window means always open)"
        )
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidInput("window", f"unknown IANA time zone {zone!r}") from None
    return (start, end, zone)


@dataclass
class Task:
    """A task with its handler and options, as registered by workers."""

    definition: TaskDefinition[Any]
    handler: Handler
    queue: str = "default"
    max_attempts: int = 3
    concurrency: int | None = None
    batch: dict[str, int] | None = None
    window: tuple[str, str, str] | None = None
    remove_on_complete: Retention = field(default_factory=lambda: {"days": 7.0})
    remove_on_fail: Retention = field(default_factory=lambda: {"days": 30.0})
    triggers: tuple[Invocable, ...] = (Invocable(),)
    conductor: Conductor | None = None
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        if not callable(self.handler):
            raise InvalidInput("handler", f"must be callable, got {self.handler!r}")
        check_name("queue", self.queue, 48)
        if type(self.max_attempts) is not int or self.max_attempts < 1:
            raise InvalidInput("max_attempts", f"must be a positive integer, got {self.max_attempts!r}")
        if self.concurrency is not None and (
            type(self.concurrency) is not int or not 1 <= self.concurrency <= 1_000_000
        ):
            raise InvalidInput("concurrency", f"must be None or a positive integer, got {self.concurrency!r}")
        if self.batch is not None and not (
            isinstance(self.batch, dict)
            and set(self.batch) == {"size", "timeout_ms"}
            and type(self.batch["size"]) is int
            and 1 <= self.batch["size"] <= 10_000
            and type(self.batch["timeout_ms"]) is int
            and 0 <= self.batch["timeout_ms"] < 10**9
        ):
            raise InvalidInput(
                "batch", f'must be None or {{"size": 1..10000, "timeout_ms": N >= 0}}, got {self.batch!r}'
            )
        self.window = check_window(self.window)
        check_retention("remove_on_complete", self.remove_on_complete)
        check_retention("remove_on_fail", self.remove_on_fail)
        for trigger in self.triggers:
            if not isinstance(trigger, Invocable):
                raise NotSupported(f"trigger {trigger!r} is not supported by this version")
        self.is_async = inspect.iscoroutinefunction(self.handler)

    @property
    def name(self) -> str:
        return self.definition.name

    def registration(self) -> dict[str, Any]:
        """The task's declaration for `pgconductor.register_worker`."""
        return {
            "name": self.name,
            "queue": self.queue,
            "max_attempts": self.max_attempts,
            "concurrency": self.concurrency,
            "batch": self.batch,
            "window": list(self.window) if self.window is not None else None,
            "remove_on_complete": self.remove_on_complete,
            "remove_on_fail": self.remove_on_fail,
        }

    def _client(self) -> Conductor:
        if self.conductor is None:
            raise InvalidInput("task", f"task {self.name!r} is not attached to a Conductor")
        return self.conductor

    async def invoke(self, payload: Any = None, **options: Any) -> Any:
        """Enqueue an execution of this task (same options as `Conductor.invoke`)."""
        return await self._client().invoke(self.name, payload, **options)

    def invoke_sync(self, payload: Any = None, **options: Any) -> Any:
        """Blocking twin of `invoke`."""
        return self._client().invoke_sync(self.name, payload, **options)

    async def invoke_many(self, items: list[dict[str, Any]], **options: Any) -> Any:
        """Enqueue many executions of this task in one statement."""
        return await self._client().invoke_many(self.name, items, **options)

    def invoke_many_sync(self, items: list[dict[str, Any]], **options: Any) -> Any:
        """Blocking twin of `invoke_many`."""
        return self._client().invoke_many_sync(self.name, items, **options)
