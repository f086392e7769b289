"""The log reader on real files: filters, pages, live tail, rotation, malformed lines."""

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aivonx.api.logs import reader
from aivonx.api.logs.reader import Cursor, LogFilter, read_after, read_page
from aivonx.logs import attach_file, detach_file


def line(n: int, **fields: object) -> str:
    entry = {
        "time": f"2026-11-23T10:{n // 60:02d}:{n % 60:02d}.000Z",
        "level": "INFO",
        "logger": "aivonx",
        "message": f"line {n}",
        **fields,
    }
    return json.dumps(entry) + "\n"


def request_line(n: int, model: str, node: str, status: int) -> str:
    return line(n, logger="aivonx.request", message=f"POST /api/chat {status}", model=model, node=node, status=status)


def messages(page: reader.Page) -> list[str]:
    return [entry["message"] for entry in page.entries]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "aivonx.log"


def test_newest_first_in_pages_until_the_end(log_path: Path):
    log_path.write_text("".join(line(n) for n in range(25)))
    first = read_page(str(log_path), LogFilter(), 10)
    assert messages(first) == [f"line {n}" for n in range(24, 14, -1)]
    second = read_page(str(log_path), LogFilter(), 10, Cursor.parse(first.next))
    assert messages(second) == [f"line {n}" for n in range(14, 4, -1)]
    third = read_page(str(log_path), LogFilter(), 10, Cursor.parse(second.next))
    assert messages(third) == [f"line {n}" for n in range(4, -1, -1)]
    assert third.next is None
    assert first.latest == first.entries[0]["cursor"]


def test_large_file_pages_cross_read_blocks(log_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(reader, "BLOCK", 100)  # lines are longer than a block: every seam is crossed
    log_path.write_text("".join(line(n, pad="x" * (n % 7) * 30) for n in range(300)))
    seen: list[str] = []
    cursor = None
    while True:
        page = read_page(str(log_path), LogFilter(), 37, cursor)
        seen += messages(page)
        if page.next is None:
            break
        cursor = Cursor.parse(page.next)
    assert seen == [f"line {n}" for n in range(299, -1, -1)]


def test_filters(log_path: Path):
    log_path.write_text(
        line(0, level="DEBUG")
        + line(1, level="WARNING", message="disk almost FULL")
        + request_line(2, "llama3:latest", "gpu1", 200)
        + request_line(3, "mistral", "gpu2", 503)
        + request_line(4, "llama3", "gpu2", 404)
        + line(5, level="ERROR")
    )
    path = str(log_path)

    def shown(**options: object) -> list[str]:
        return messages(read_page(path, LogFilter(**options), 100))

    assert shown(level="WARNING") == ["line 5", "disk almost FULL"]
    assert shown(text="full") == ["disk almost FULL"]
    assert shown(model="llama3") == ["POST /api/chat 404", "POST /api/chat 200"]  # llama3 = llama3:latest
    assert shown(node="gpu2") == ["POST /api/chat 404", "POST /api/chat 503"]
    assert shown(status="503") == ["POST /api/chat 503"]
    assert shown(status="4xx") == ["POST /api/chat 404"]
    assert shown(source="request") == ["POST /api/chat 404", "POST /api/chat 503", "POST /api/chat 200"]
    assert shown(source="app") == ["line 5", "disk almost FULL", "line 0"]
    since, until = datetime(2026, 11, 23, 10, 0, 2, tzinfo=UTC), datetime(2026, 11, 23, 10, 0, 3, tzinfo=UTC)
    assert shown(since=since, until=until) == ["POST /api/chat 503", "POST /api/chat 200"]
    assert shown(model="llama3", node="gpu1", status="2xx") == ["POST /api/chat 200"]


def test_a_filtered_page_goes_on_where_it_stopped(log_path: Path):
    log_path.write_text("".join(request_line(n, "llama3" if n % 3 == 0 else "other", "gpu1", 200) for n in range(30)))
    first = read_page(str(log_path), LogFilter(model="llama3"), 4)
    second = read_page(str(log_path), LogFilter(model="llama3"), 4, Cursor.parse(first.next))
    times = [entry["time"][-9:-5] for entry in first.entries + second.entries]
    assert times == ["0:27", "0:24", "0:21", "0:18", "0:15", "0:12", "0:09", "0:06"]


def test_malformed_lines_are_shown_as_such_and_never_break_reading(log_path: Path):
    with open(log_path, "wb") as handle:
        handle.write(line(0).encode())
        handle.write(b"not json at all\n")
        handle.write(b"\xff\xfe broken utf-8 {\n")
        handle.write(b"[1, 2, 3]\n")
        handle.write(b"\n")
        handle.write(line(1).encode())
    page = read_page(str(log_path), LogFilter(), 100)
    assert [entry.get("malformed", False) for entry in page.entries] == [False, True, True, True, False]
    assert page.entries[1]["message"] == "[1, 2, 3]"
    assert "broken utf-8" in page.entries[2]["message"]
    # Field filters need a log object; text alone can find a malformed line.
    assert messages(read_page(str(log_path), LogFilter(level="INFO"), 100)) == ["line 1", "line 0"]
    assert messages(read_page(str(log_path), LogFilter(text="NOT JSON"), 100)) == ["not json at all"]


def test_a_line_still_being_written_is_not_read_yet(log_path: Path):
    log_path.write_text(line(0) + line(1) + '{"time": "2026-11-23T10:00:02.000Z", "level": "IN')
    page = read_page(str(log_path), LogFilter(), 100)
    assert messages(page) == ["line 1", "line 0"]
    with open(log_path, "a") as handle:
        handle.write('FO", "message": "line 2"}\n')
    assert messages(read_after(str(log_path), LogFilter(), 100, Cursor.parse(page.latest))) == ["line 2"]


def test_live_tail_returns_only_newer_lines(log_path: Path):
    log_path.write_text(line(0) + line(1))
    page = read_page(str(log_path), LogFilter(), 100)
    tail = read_after(str(log_path), LogFilter(), 100, Cursor.parse(page.latest))
    assert tail.entries == [] and tail.latest == page.latest
    with open(log_path, "a") as handle:
        handle.write(line(2) + request_line(3, "llama3", "gpu1", 200) + line(4))
    tail = read_after(str(log_path), LogFilter(), 100, Cursor.parse(page.latest))
    assert messages(tail) == ["line 4", "POST /api/chat 200", "line 2"]
    # A filter does not hold the tail back: `latest` moves past lines that did not match.
    filtered = read_after(str(log_path), LogFilter(model="llama3"), 100, Cursor.parse(page.latest))
    assert messages(filtered) == ["POST /api/chat 200"] and filtered.latest == tail.latest
    # More new lines than the limit: the oldest of them first, the rest on the next call.
    limited = read_after(str(log_path), LogFilter(), 2, Cursor.parse(page.latest))
    assert messages(limited) == ["POST /api/chat 200", "line 2"]
    assert messages(read_after(str(log_path), LogFilter(), 2, Cursor.parse(limited.latest))) == ["line 4"]


@pytest.fixture
def rotating_logger(log_path: Path):
    """The app's own rotating handler (concurrent-log-handler), rotating every few lines."""
    logger = logging.getLogger(f"aivonx.test_log_reader.{os.getpid()}.{log_path.parent.name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    attach_file(logger, str(log_path), max_bytes=1000, backups=50)
    yield logger
    detach_file(str(log_path))


def test_rotated_files_are_read_and_cursors_survive_rotation(log_path: Path, rotating_logger: logging.Logger):
    for n in range(40):
        rotating_logger.info("message %d", n)
    assert (log_path.parent / "aivonx.log.1").exists() and (log_path.parent / "aivonx.log.3").exists()
    everything = read_page(str(log_path), LogFilter(), 1000)
    assert messages(everything) == [f"message {n}" for n in range(39, -1, -1)]

    first = read_page(str(log_path), LogFilter(), 5)
    for n in range(40, 80):  # several rotations between the two pages and the tail
        rotating_logger.info("message %d", n)
    older = read_page(str(log_path), LogFilter(), 5, Cursor.parse(first.next))
    assert messages(older) == [f"message {n}" for n in range(34, 29, -1)]
    tail = read_after(str(log_path), LogFilter(), 1000, Cursor.parse(first.latest))
    assert messages(tail) == [f"message {n}" for n in range(79, 39, -1)]


def test_a_cursor_into_a_deleted_file(log_path: Path, rotating_logger: logging.Logger):
    rotating_logger.info("first")
    first = read_page(str(log_path), LogFilter(), 1)
    for n in range(200):  # the oldest files are deleted past the backup count (50)
        rotating_logger.info("message %d %s", n, "x" * 300)
    assert read_page(str(log_path), LogFilter(), 10, Cursor.parse(first.next or first.latest)).entries == []
    tail = read_after(str(log_path), LogFilter(), 1000, Cursor.parse(first.latest))
    assert messages(tail)[0] == f"message 199 {'x' * 300}"


def test_no_log_file_yet(tmp_path: Path):
    page = read_page(str(tmp_path / "missing" / "aivonx.log"), LogFilter(), 10)
    assert page.entries == [] and page.next is None and page.latest is None


def test_cursor_syntax():
    assert str(Cursor.parse("12-34-0a1b2c3d")) == "12-34-0a1b2c3d"
    for bad in ("", "12", "a-b", "12-34", "12-34-xyz", "-1-2-0a1b2c3d"):
        with pytest.raises(reader.CursorError):
            Cursor.parse(bad)
