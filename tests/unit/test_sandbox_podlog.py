"""The container log as the kubelet keeps and reads it: CRI records with the
time each line arrived, read back with tailLines, sinceSeconds and timestamps."""

from __future__ import annotations

from corednsprobe.sandbox.workloads import (
    LogOptions,
    cri_record,
    parse_rfc3339_nano,
    render,
    rfc3339_nano,
)

T0 = 1_796_072_400_123_456_789  # 2026-11-30T21:00:00.123456789Z


def test_rfc3339_nano_is_utc_with_nine_digits_and_round_trips() -> None:
    assert rfc3339_nano(T0) == "2026-11-30T21:00:00.123456789Z"
    assert rfc3339_nano(T0 - 123_456_789) == "2026-11-30T21:00:00.000000000Z"
    assert parse_rfc3339_nano(rfc3339_nano(T0)) == T0
    assert parse_rfc3339_nano("2026-11-30T21:00:00.5Z") == T0 - 123_456_789 + 500_000_000


def test_records_render_plain_stamped_and_since() -> None:
    records = [cri_record(T0, b"one\n"), cri_record(T0 + 2_000_000_000, b"two\n"),
               cri_record(T0 + 3_000_000_000, b"no newline")]
    assert records[0] == b"2026-11-30T21:00:00.123456789Z stdout F one\n"
    assert records[2] == b"2026-11-30T21:00:03.123456789Z stdout P no newline\n"
    assert render(records, LogOptions()) == b"one\ntwo\nno newline"
    assert render(records, LogOptions(timestamps=True)) == (
        b"2026-11-30T21:00:00.123456789Z one\n2026-11-30T21:00:02.123456789Z two\n"
        b"2026-11-30T21:00:03.123456789Z no newline")
    assert render(records, LogOptions(since_ns=T0 + 2_000_000_000)) == b"two\nno newline"
    assert render(records, LogOptions(since_ns=T0 + 1)) == b"two\nno newline"
    assert render(records, LogOptions(since_ns=T0 + 4_000_000_000)) == b""
