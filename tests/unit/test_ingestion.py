"""Parsing and fetching the dataset: good input, every kind of bad line, the download cache."""

import io
import zipfile
from pathlib import Path

import pytest

from sms_assets.defs.ingestion.dataset import (
    EPOCH,
    MEMBER,
    UCI_SHA256,
    DatasetError,
    fetch_dataset,
    parse_messages,
)
from sms_core.features.schema import MAX_TEXT_CHARS


def write(tmp_path: Path, payload: bytes) -> Path:
    path = tmp_path / "sms.tsv"
    path.write_bytes(payload)
    return path


def test_parses_ids_timestamps_labels(tmp_path: Path) -> None:
    path = write(tmp_path, b"ham\thello there\nspam\tWIN now\r\nham\tcaf\xc3\xa9 at 5\n")
    messages = list(parse_messages(path))
    assert [m.message_id for m in messages] == [1, 2, 3]
    assert [m.label for m in messages] == ["ham", "spam", "ham"]
    assert messages[1].text == "WIN now"
    assert messages[2].text == "café at 5"
    assert messages[0].event_timestamp == EPOCH
    assert messages[2].event_timestamp > messages[1].event_timestamp > messages[0].event_timestamp


def test_real_dataset_counts(dataset_path: Path) -> None:
    messages = list(parse_messages(dataset_path))
    assert len(messages) == 5574
    assert sum(m.label == "spam" for m in messages) == 747
    assert len({m.message_id for m in messages}) == 5574


@pytest.mark.parametrize(
    ("payload", "line", "problem"),
    [
        (b"ham\tok\nham\n", 2, "expected 2 tab-separated fields (label, text), found 1"),
        (b"ham\tok\nham\ta\tb\n", 2, "found 3"),
        (b"ham\tok\nspam\tok\nphish\tclick\n", 3, "unknown label 'phish'"),
        (b"ham\tok\nham\t   \n", 2, "empty text"),
        (b"ham\tok\nham\tbad \xff byte\n", 2, "invalid UTF-8 (byte 0xff at column 9)"),
        (b"\n", 1, "found 1"),
        (b"ham\tok\nham\tnul\x00\n", 2, "NUL character at column 8"),
    ],
)
def test_malformed_line_is_named(tmp_path: Path, payload: bytes, line: int, problem: str) -> None:
    path = write(tmp_path, payload)
    with pytest.raises(DatasetError) as error:
        list(parse_messages(path))
    assert f"{path}:{line}: " in str(error.value)
    assert problem in str(error.value)


@pytest.mark.parametrize(
    ("length", "size"), [(2001, "2,001"), (52_000_000, "52,000,000")], ids=["2001", "52MB"]
)
def test_a_text_the_api_would_refuse_is_refused_by_its_size(tmp_path: Path, length: int, size: str) -> None:
    # The 52 MB message of issue 10 was stored, served and trained on.
    path = write(tmp_path, b"ham\tok\nspam\t" + b"WIN!" * (length // 4) + b"W" * (length % 4) + b"\n")
    with pytest.raises(DatasetError) as error:
        list(parse_messages(path))
    assert str(error.value) == (
        f"{path}:2: text of {size} characters, above the limit of {MAX_TEXT_CHARS:,} (MAX_TEXT_CHARS)"
    )


def test_a_text_of_the_longest_length_allowed_is_read(tmp_path: Path) -> None:
    text = "ü" * MAX_TEXT_CHARS
    [message] = parse_messages(write(tmp_path, f"spam\t{text}\n".encode()))
    assert message.text == text


def test_local_path_is_used_as_given(dataset_path: Path, tmp_path: Path) -> None:
    assert fetch_dataset(str(dataset_path), tmp_path / "cache") == dataset_path
    assert not (tmp_path / "cache").exists()


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not name a file"):
        fetch_dataset(str(tmp_path / "nope.tsv"), tmp_path)


def test_offline_download_says_how_to_fix(tmp_path: Path) -> None:
    # Port 9 (discard) is closed on loopback: the same failure as a machine without internet.
    with pytest.raises(DatasetError) as error:
        fetch_dataset(None, tmp_path, url="http://127.0.0.1:9/sms.zip")
    assert "Could not download" in str(error.value)
    assert "set SMS_DATASET_PATH" in str(error.value)


def zip_holding(tmp_path: Path, content: bytes, member: str = MEMBER) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, content)
    path = tmp_path / "upstream.zip"
    path.write_bytes(buffer.getvalue())
    return path.as_uri()


def test_download_is_checked_and_cached(dataset_path: Path, tmp_path: Path) -> None:
    url = zip_holding(tmp_path, dataset_path.read_bytes())
    cache = tmp_path / "cache"
    fetched = fetch_dataset(None, cache, url=url)
    assert fetched == cache / MEMBER
    assert fetched.read_bytes() == dataset_path.read_bytes()
    # Cached: a second call does not need the URL any more.
    assert fetch_dataset(None, cache, url="http://127.0.0.1:9/gone.zip") == fetched


def test_download_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    url = zip_holding(tmp_path, b"ham\tnot the real dataset\n")
    with pytest.raises(DatasetError, match=f"expected {UCI_SHA256}"):
        fetch_dataset(None, tmp_path / "cache", url=url)
    assert not (tmp_path / "cache" / MEMBER).exists()


def test_download_that_is_not_the_zip(tmp_path: Path) -> None:
    url = zip_holding(tmp_path, b"x", member="other.txt")
    with pytest.raises(DatasetError, match="not the expected zip"):
        fetch_dataset(None, tmp_path / "cache", url=url)
