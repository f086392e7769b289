"""Read the JSON log files newest first, with filters, pages and a live tail.

The handler (aivonx.logs) rotates by renaming: `aivonx.log` -> `aivonx.log.1` -> ...; a
file keeps its inode when renamed, so a cursor is `<inode>-<offset of a line>` and still
points at the same line after any number of rotations (until the file is deleted). A
deleted file's inode may be reused by a new file, so the cursor also carries a checksum of
its line, and a cursor whose line is not there any more points at a file that is gone.

Files are read from the end backwards in blocks, so the first page of a large log costs a
few blocks, not the file. A line that is not a JSON object is returned as `malformed`
(never an error); the last line of the newest file is left out until its newline is
written (another process may be writing it right now).
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from aivonx.proxy.names import normalize_model

BLOCK = 64 * 1024
MALFORMED_SHOWN = 2000  # characters of a malformed line shown
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
REQUEST_LOGGER = "aivonx.request"
SOURCES = ("all", "app", "request")
# Written so that JSON Schema (ECMA-262) reads them as Python does: the API documents them.
CURSOR_PATTERN = "^[0-9]+-[0-9]+-[0-9a-f]{8}$"
STATUS_PATTERN = "^(?:[1-5]xx|[1-5][0-9]{2})$"
_CURSOR = re.compile(r"([0-9]+)-([0-9]+)-([0-9a-f]{8})")
_STATUS = re.compile(STATUS_PATTERN[1:-1])


class CursorError(ValueError):
    pass


def checksum(line: bytes) -> str:
    return f"{zlib.crc32(line):08x}"


@dataclass(frozen=True)
class Cursor:
    """Where a line is: its file's inode, its offset, and a checksum of the line."""

    inode: int
    offset: int
    check: str

    @classmethod
    def at(cls, inode: int, offset: int, line: bytes) -> Cursor:
        return cls(inode, offset, checksum(line))

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _CURSOR.fullmatch(text)
        if match is None:
            raise CursorError("must look like 1234-5678-0a1b2c3d (a cursor from an earlier answer)")
        return cls(int(match[1]), int(match[2]), match[3])

    def __str__(self) -> str:
        return f"{self.inode}-{self.offset}-{self.check}"

    def found_in(self, handle: BinaryIO) -> bool:
        """Whether the line is still where the cursor says (the file was not replaced)."""
        handle.seek(self.offset)
        line = handle.readline()
        return line.endswith(b"\n") and checksum(line[:-1]) == self.check


def status_pattern_ok(text: str) -> bool:
    return _STATUS.fullmatch(text) is not None


@dataclass(frozen=True)
class LogFilter:
    """What to show. Everything given must match; `level` is the lowest level shown."""

    level: str | None = None
    text: str | None = None
    model: str | None = None
    node: str | None = None
    status: str | None = None  # "404" or a class like "5xx"
    since: datetime | None = None
    until: datetime | None = None
    source: str = "all"

    @property
    def needs_fields(self) -> bool:
        """Whether a line must be a log object to match (a malformed one then never does)."""
        return (
            any(value is not None for value in (self.level, self.model, self.node, self.status, self.since, self.until))
            or self.source != "all"
        )

    def matches(self, entry: dict[str, Any] | None, raw: str) -> bool:
        if self.text and self.text.lower() not in raw.lower():
            return False
        if entry is None:
            return not self.needs_fields
        if self.source != "all" and (entry.get("logger") == REQUEST_LOGGER) != (self.source == "request"):
            return False
        if self.level and LEVELS.get(str(entry.get("level")), 0) < LEVELS[self.level]:
            return False
        if self.model is not None:
            model = entry.get("model")
            if not isinstance(model, str) or normalize_model(model) != normalize_model(self.model):
                return False
        if self.node is not None and entry.get("node") != self.node:
            return False
        if self.status is not None and not _status_matches(entry.get("status"), self.status):
            return False
        if self.since is not None or self.until is not None:
            when = entry_time(entry)
            if when is None:
                return False
            if (self.since is not None and when < self.since) or (self.until is not None and when > self.until):
                return False
        return True


def _status_matches(status: Any, wanted: str) -> bool:
    if not isinstance(status, int):
        return False
    if wanted.endswith("xx"):
        return status // 100 == int(wanted[0])
    return status == int(wanted)


def entry_time(entry: dict[str, Any]) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(entry["time"]))
    except (KeyError, ValueError):
        return None
    # A line without a zone (not one of ours) is taken as UTC: filters compare aware times.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass
class Page:
    entries: list[dict[str, Any]]
    next: str | None  # cursor for the next (older) page, when there may be one
    latest: str | None  # cursor of the newest line looked at: `after=` it for the live tail


def log_files(path: str) -> list[tuple[str, int]]:
    """(file name, inode) of the log and its rotated files, newest first."""
    directory, base = os.path.split(path)
    numbered = []
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return []
    for name in names:
        suffix = name[len(base) + 1 :] if name.startswith(base + ".") else ""
        if suffix.isdigit():
            numbered.append((int(suffix), os.path.join(directory, name)))
    files = []
    for candidate in [path, *(name for _, name in sorted(numbered))]:
        try:
            files.append((candidate, os.stat(candidate).st_ino))
        except FileNotFoundError:  # rotated away between listdir and stat
            continue
    return files


def _complete_end(handle: BinaryIO) -> int:
    """Offset just after the last newline: a line still being written is not read yet."""
    end = handle.seek(0, os.SEEK_END)
    pos = end
    while pos > 0:
        step = min(BLOCK, pos)
        handle.seek(pos - step)
        block = handle.read(step)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return pos - step + newline + 1
        pos -= step
    return 0


def _backward(handle: BinaryIO, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of the lines that end before `end`, last first."""
    pos, carry = end, b""
    while pos > 0:
        step = min(BLOCK, pos)
        pos -= step
        handle.seek(pos)
        parts = (handle.read(step) + carry).split(b"\n")
        carry = parts[0]  # may continue in the block before
        offset = pos + len(carry) + 1
        lines = []
        for line in parts[1:]:
            lines.append((offset, line))
            offset += len(line) + 1
        for offset_line in reversed(lines):
            if offset_line[1].strip():
                yield offset_line
    if carry.strip():
        yield 0, carry


def _forward(handle: BinaryIO, start: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of the complete lines from `start` on."""
    handle.seek(start)
    offset = start
    for line in handle:
        if not line.endswith(b"\n"):
            return  # still being written
        if line.strip():
            yield offset, line[:-1]
        offset += len(line)


def parse_line(line: bytes, cursor: Cursor) -> tuple[dict[str, Any] | None, str, dict[str, Any]]:
    """(the log object or None, the text, the entry as the API shows it)."""
    text = line.decode("utf-8", errors="replace").rstrip("\r")
    try:
        entry = json.loads(text)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        shown = text if len(text) <= MALFORMED_SHOWN else text[:MALFORMED_SHOWN] + "…"
        return None, text, {"cursor": str(cursor), "malformed": True, "level": None, "message": shown}
    return entry, text, {**entry, "cursor": str(cursor)}


def _rank_of(files: list[tuple[str, int]], cursor: Cursor) -> int | None:
    """Which of `files` holds the cursor's line; None when that file is gone."""
    for rank, (name, inode) in enumerate(files):
        if inode == cursor.inode:
            try:
                with open(name, "rb") as handle:
                    return rank if cursor.found_in(handle) else None
            except FileNotFoundError:
                return None
    return None


def read_page(path: str, log_filter: LogFilter, limit: int, before: Cursor | None = None) -> Page:
    """Up to `limit` matching entries, newest first, older than `before` (else from the newest)."""
    files = log_files(path)
    start_rank = 0
    if before is not None:
        found = _rank_of(files, before)
        if found is None:  # that file was rotated out of existence: nothing older is left
            return Page([], None, None)
        start_rank = found
    entries: list[dict[str, Any]] = []
    latest: str | None = None
    for rank in range(start_rank, len(files)):
        name, inode = files[rank]
        try:
            handle = open(name, "rb")  # noqa: SIM115 - closed below, also when the loop stops early
        except FileNotFoundError:
            continue
        with handle:
            end = before.offset if before is not None and rank == start_rank else _complete_end(handle)
            for offset, line in _backward(handle, end):
                cursor = Cursor.at(inode, offset, line)
                if latest is None:
                    latest = str(cursor)
                entry, text, shown = parse_line(line, cursor)
                if log_filter.matches(entry, text):
                    entries.append(shown)
                    if len(entries) == limit:
                        return Page(entries, str(cursor), latest if before is None else None)
    return Page(entries, None, latest if before is None else None)


def read_after(path: str, log_filter: LogFilter, limit: int, after: Cursor) -> Page:
    """Matching entries newer than `after` (at most `limit`, the oldest of them), newest
    first; `latest` is where the next call continues."""
    files = log_files(path)
    found = _rank_of(files, after)
    # The cursor's file is gone (rotated out): everything there is now is newer.
    start_rank = found if found is not None else len(files) - 1
    entries: list[dict[str, Any]] = []
    latest = str(after)
    for rank in range(start_rank, -1, -1):
        name, inode = files[rank]
        try:
            handle = open(name, "rb")  # noqa: SIM115
        except FileNotFoundError:
            continue
        with handle:
            skip_first = found is not None and rank == start_rank
            for offset, line in _forward(handle, after.offset if skip_first else 0):
                if skip_first and offset == after.offset:
                    continue
                cursor = Cursor.at(inode, offset, line)
                latest = str(cursor)
                entry, text, shown = parse_line(line, cursor)
                if log_filter.matches(entry, text):
                    entries.append(shown)
                    if len(entries) == limit:
                        entries.reverse()
                        return Page(entries, None, latest)
    entries.reverse()
    return Page(entries, None, latest)
