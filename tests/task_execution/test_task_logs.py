"""Splitting the kubelet's ``timestamps=true`` log stream into records (no cluster needed)."""

from __future__ import annotations

import datetime as dt

from plait.task_execution.logs import split_lines

T1 = "2026-12-02T07:40:20.123456789Z"
T2 = "2026-12-02T07:40:21.5Z"
W1 = dt.datetime(2026, 12, 2, 7, 40, 20, 123456, tzinfo=dt.UTC)
W2 = dt.datetime(2026, 12, 2, 7, 40, 21, 500000, tzinfo=dt.UTC)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_lines_keep_their_time_and_text_whatever_the_chunks() -> None:
    stream = f"{T1} héllo wörld\n{T2} \n{T1} with\ttabs  and  spaces\r\n".encode()
    expected = [(W1, "héllo wörld"), (W2, ""), (W1, "with\ttabs  and  spaces")]
    for size in (1, 2, 3, 7, len(stream)):
        assert list(split_lines(chunked(stream, size))) == expected


def test_a_last_line_without_newline_and_nul_bytes() -> None:
    stream = f"{T1} a\x00b\n{T2} no newline".encode()
    assert list(split_lines([stream])) == [(W1, "a\ufffdb"), (W2, "no newline")]


def test_a_line_longer_than_the_limit_comes_in_pieces_with_its_time() -> None:
    body = "x" * 100 + "y" * 50
    stream = f"{T1} {body}\n{T2} next\n".encode()
    prefix = len(T1) + 1
    for size in (1, 16, 1000):
        lines = list(split_lines(chunked(stream, size), max_line=64))
        assert [w for w, _ in lines] == [W1, W1, W1, W2]
        assert "".join(t for _, t in lines[:3]) == body
        assert [len(t) for _, t in lines[:3]] == [64 - prefix, 64, 150 - 64 - (64 - prefix)]
        assert lines[3] == (W2, "next")


def test_a_line_without_a_timestamp_is_kept_whole() -> None:
    assert list(split_lines([b"not a time at all\n"])) == [(None, "not a time at all")]
