"""The lock a long-lived process holds alone (sms-assets dev, the arrivals worker): others learn who
holds it without taking it, and a second holder is refused, naming the first."""

import os
from pathlib import Path

import pytest

from sms_core import locks


def test_no_holder_before_after_and_without_the_file(tmp_path: Path) -> None:
    path = tmp_path / "worker.lock"
    assert locks.holder(path) is None
    with locks.sole(path):
        assert locks.holder(path) == str(os.getpid())
    assert locks.holder(path) is None


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    path = tmp_path / "worker.lock"
    with locks.sole(path):
        with pytest.raises(locks.Busy) as busy, locks.sole(path):
            pass
        assert busy.value.holder == str(os.getpid())
        # Refused, the second try left the first holder's lock and pid as they were.
        assert locks.holder(path) == str(os.getpid())
    with locks.sole(path):
        pass
