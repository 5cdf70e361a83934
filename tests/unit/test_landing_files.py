"""The landing folder holds only what it should read: hostile entries and names, on a real file system.

Every refused entry is named with what it is, and never has its contents read: the files outside the
folder that links point at hold SECRET, which must appear in no error.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sms_assets.defs.ingestion import landing_files
from sms_assets.defs.ingestion.batches import MESSAGES_HEADER, BatchError, read_batch
from sms_assets.defs.ingestion.landing import LandingFolder
from sms_assets.defs.ingestion.landing_files import check_batch_name, opened_folder, read_regular

GOOD = "sms_id\treceived_at\ttext\nq-1\t2026-05-01T12:00:00Z\tSECRET message\n"


@pytest.fixture
def folder(tmp_path: Path) -> LandingFolder:
    (tmp_path / "landing").mkdir()
    return LandingFolder(tmp_path / "landing", max_bytes=1024)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A valid batch outside the landing folder: what a link must not bring in."""
    path = tmp_path / "elsewhere" / "secret.tsv"
    path.parent.mkdir()
    path.write_text(GOOD)
    return path


def refusal(folder: LandingFolder, name: str) -> str:
    with pytest.raises(BatchError) as error:
        folder.read(folder.root / name)
    message = str(error.value)
    assert "SECRET" not in message
    return message


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty"),
        ("../outside.tsv", "holds a path separator"),
        ("processed/../../outside.tsv", "holds a path separator"),
        ("/etc/passwd.tsv", "holds a path separator"),
        ("a\\b.tsv", "holds a path separator"),
        ("..", "starts with a dot"),
        (".", "starts with a dot"),
        (".hidden.tsv", "starts with a dot"),
        (".b.tsv.part", "starts with a dot"),
        ("a\x00b.tsv", "holds a control character"),
        ("forged\nlog line.tsv", "holds a control character"),
        ("bad-\udcff.tsv", "is not valid UTF-8"),
        ("x" * 252 + ".tsv", "is longer than 255 bytes"),
        ("notes.txt", "does not end in .tsv"),
    ],
)
def test_a_name_that_cannot_be_a_batch_is_refused_by_name(name: str, problem: str) -> None:
    with pytest.raises(BatchError) as error:
        check_batch_name(name)
    message = str(error.value)
    assert message.startswith(f"batch name {landing_files.shown(name, 255)} {problem}")
    assert "\n" not in message and "\x00" not in message


@pytest.mark.parametrize("name", ["2026-05-01T10-uci-0001-messages.tsv", "a..b.tsv", "été ✓.tsv", "x.tsv"])
def test_plain_names_are_batch_names(name: str) -> None:
    assert check_batch_name(name) == name


def test_pending_lists_every_batch_name_and_leaves_other_names_alone(
    folder: LandingFolder, outside: Path
) -> None:
    root = folder.root
    (root / "b-regular.tsv").write_text(GOOD)
    (root / "c-link.tsv").symlink_to(outside)
    (root / "d-folder.tsv").mkdir()
    os.mkfifo(root / "e-fifo.tsv")
    for ignored in (".hidden.tsv", ".f.tsv.part", "notes.txt", "forged\nline.tsv"):
        (root / ignored).write_text(GOOD)
    names = [path.name for path in folder.pending()]
    # Entries under a batch name wait, whatever they are: the run refuses and quarantines them.
    assert names == ["b-regular.tsv", "c-link.tsv", "d-folder.tsv", "e-fifo.tsv"]


def test_links_folders_fifos_sockets_and_hard_links_are_refused_unread(
    folder: LandingFolder, outside: Path
) -> None:
    root = folder.root
    (root / "link-out.tsv").symlink_to(outside)
    (root / "inside.tsv").write_text(GOOD)
    (root / "link-in.tsv").symlink_to(root / "inside.tsv")
    (root / "link-dir.tsv").symlink_to(outside.parent, target_is_directory=True)
    (root / "dangling.tsv").symlink_to(root / "nothing")
    (root / "folder.tsv").mkdir()
    os.mkfifo(root / "fifo.tsv")  # with no writer: opening it for reading would block
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / "socket.tsv"))
        assert "is a socket, not a regular file" in refusal(folder, "socket.tsv")
    os.link(outside, root / "hard.tsv")

    for name in ("link-out.tsv", "link-in.tsv", "link-dir.tsv", "dangling.tsv"):
        assert refusal(folder, name) == f"{root / name} is a symbolic link, not a regular file"
    assert refusal(folder, "folder.tsv") == f"{root / 'folder.tsv'} is a folder, not a regular file"
    assert refusal(folder, "fifo.tsv") == f"{root / 'fifo.tsv'} is a FIFO (named pipe), not a regular file"
    assert refusal(folder, "hard.tsv") == (
        f"{root / 'hard.tsv'} has 2 names (hard links); a batch is a file of its own"
    )
    # The regular file the inside link names is a batch under its own name.
    assert folder.read(root / "inside.tsv").messages[0].sms_id == "q-1"


def test_a_device_is_refused_before_it_is_opened() -> None:
    refused = pytest.raises(BatchError, match=r"^/dev/null is a character device, not a regular file$")
    with opened_folder(Path("/dev"), follow=True) as dev, refused:
        read_regular(dev, "null", "/dev/null", 1024)


def test_a_file_above_the_size_limit_is_refused_by_size(folder: LandingFolder) -> None:
    (folder.root / "big.tsv").write_text(GOOD + "q-2\t2026-05-01T12:00:00Z\t" + "SECRET " * 200 + "\n")
    size = (folder.root / "big.tsv").stat().st_size
    assert refusal(folder, "big.tsv") == (
        f"{folder.root / 'big.tsv'} is {size:,} bytes, above the limit of 1,024 bytes a batch "
        "(LandingResource.max_bytes)"
    )
    assert LandingFolder(folder.root, max_bytes=size).read(folder.root / "big.tsv").messages


@pytest.fixture
def swap_after_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """Replaces a file between read_regular's lstat and its open, as a racing producer could."""
    swaps: list = []
    real_stat = os.stat

    def stat_then_swap(*args, **kwargs):
        result = real_stat(*args, **kwargs)
        while swaps:
            swaps.pop()()
        return result

    monkeypatch.setattr(landing_files.os, "stat", stat_then_swap)
    yield swaps


def test_a_link_swapped_in_after_the_check_is_not_followed(
    folder: LandingFolder, outside: Path, swap_after_check: list
) -> None:
    path = folder.root / "race.tsv"
    path.write_text(GOOD)

    def swap() -> None:
        path.unlink()
        path.symlink_to(outside)

    swap_after_check.append(swap)
    message = refusal(folder, "race.tsv")
    assert message.startswith(f"{path} was replaced by a symbolic link: ")


def test_a_file_swapped_in_after_the_check_is_refused(folder: LandingFolder, swap_after_check: list) -> None:
    path = folder.root / "race.tsv"
    path.write_text(GOOD)
    other = folder.root / "other.tsv"
    other.write_text(GOOD.replace("q-1", "q-2"))
    swap_after_check.append(lambda: os.replace(other, path))
    assert refusal(folder, "race.tsv") == f"{path} was replaced by another file while it was opened"


def test_quarantine_moves_a_link_itself_and_quotes_nothing(folder: LandingFolder, outside: Path) -> None:
    link = folder.root / "link.tsv"
    link.symlink_to(outside)
    reason = refusal(folder, "link.tsv")
    moved = folder.quarantine(link, reason)
    assert moved == folder.quarantined / "link.tsv" and moved.is_symlink()
    assert not os.path.lexists(link)
    assert outside.read_text() == GOOD  # the target is where it was, untouched
    assert folder.quarantine_reason(moved) == f"{link} is a symbolic link, not a regular file"
    assert "SECRET" not in (folder.quarantined / "link.tsv.error").read_text()


def test_a_planted_reason_file_link_is_replaced_not_followed(folder: LandingFolder, outside: Path) -> None:
    folder.quarantined.mkdir()
    (folder.quarantined / "bad.tsv.error").symlink_to(outside)
    (folder.root / "bad.tsv").write_text("no header\n")
    folder.quarantine(folder.root / "bad.tsv", "bad.tsv:1: unknown header")
    assert outside.read_text() == GOOD
    assert not (folder.quarantined / "bad.tsv.error").is_symlink()
    assert folder.quarantine_reason(folder.quarantined / "bad.tsv") == "bad.tsv:1: unknown header"


def test_a_linked_reason_file_is_not_read(folder: LandingFolder, outside: Path) -> None:
    folder.quarantined.mkdir()
    (folder.quarantined / "x.tsv").write_text(GOOD)
    (folder.quarantined / "x.tsv.error").symlink_to(outside)
    reason = folder.quarantine_reason(folder.quarantined / "x.tsv")
    assert "its reason cannot be read" in reason and "is a symbolic link" in reason
    assert "SECRET" not in reason


@pytest.mark.parametrize("sub", ["processed", "quarantine"])
def test_a_linked_processed_or_quarantine_folder_is_refused(
    folder: LandingFolder, outside: Path, sub: str
) -> None:
    (folder.root / sub).symlink_to(outside.parent, target_is_directory=True)
    (folder.root / "b.tsv").write_text(GOOD)
    move = folder.archive if sub == "processed" else lambda path: folder.quarantine(path, "bad")
    with pytest.raises(BatchError, match=rf"^{folder.root / sub} is a symbolic link, not a folder of the"):
        move(folder.root / "b.tsv")
    # Nothing moved out of the landing folder, and a name is not looked up through the link.
    assert (folder.root / "b.tsv").read_text() == GOOD
    assert sorted(p.name for p in outside.parent.iterdir()) == ["secret.tsv"]
    with pytest.raises(BatchError, match=r"is a symbolic link, not a folder of the landing folder"):
        folder.find("secret.tsv")


def test_run_config_names_are_checked_before_anything_moves(folder: LandingFolder, outside: Path) -> None:
    (folder.root / "good.tsv").write_text(GOOD)
    for name in ("../elsewhere/secret.tsv", ".hidden.tsv", "a\x00b.tsv"):
        with pytest.raises(BatchError, match=r"^batch name .* a batch is named by a file name"):
            folder.select(["good.tsv", name])
    assert sorted(p.name for p in folder.root.iterdir()) == ["good.tsv"]
    assert outside.read_text() == GOOD
    assert folder.select(["good.tsv"]) == [folder.root / "good.tsv"]


def test_land_writes_whole_and_refuses_a_bad_name(folder: LandingFolder) -> None:
    now = datetime(2026, 5, 1, tzinfo=UTC)
    with pytest.raises(BatchError, match="holds a path separator"):
        folder.land("../out.tsv", MESSAGES_HEADER, [("a", now, "x")])
    path = folder.land("in.tsv", MESSAGES_HEADER, [("a", now, "x")])
    assert [p.name for p in folder.root.iterdir()] == ["in.tsv"]
    assert read_batch(path).messages[0].text == "x"
