"""`--events FILE`: every progress event of a unit as one JSON line (for a line's MES, a log, a test)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from station.errors import StationError
from station.flow import FlowEvent


def event_record(event: FlowEvent) -> dict[str, Any]:
    """The event as plain JSON values (the outcome of a finished unit included)."""
    record = {
        field.name: getattr(event, field.name)
        for field in dataclasses.fields(event)
        if field.name != "result"
    }
    if event.result is not None:
        result = dataclasses.asdict(event.result)
        result["kind"] = str(event.result.kind)
        result["next_action"] = event.result.next_action
        record["result"] = result
    return record


class EventLog:
    """Writes events to FILE (nothing when no file is given); wraps an observer."""

    def __init__(self, path: str | None) -> None:
        self._path = Path(path) if path else None
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> EventLog:
        if self._path is not None:
            try:
                self._file = self._path.open("a", encoding="utf-8")
            except OSError as exc:
                raise StationError(
                    f"cannot write the events file {self._path}: {exc.strerror or exc} — check the path"
                ) from exc
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._file is not None:
            self._file.close()

    def wrap(self, observer: Callable[[FlowEvent], None]) -> Callable[[FlowEvent], None]:
        def observe(event: FlowEvent) -> None:
            if self._file is not None:
                line = json.dumps(event_record(event), default=str)
                with self._lock:
                    self._file.write(line + "\n")
                    self._file.flush()
            observer(event)

        return observe
