"""The durable outbox: erasing a user leaves none of their text in its files."""

from __future__ import annotations

from pathlib import Path

from mnemo.outbox import Outbox
from tests.support.files import files_holding


def test_erasing_a_user_leaves_none_of_their_text_in_the_outbox_files(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", max_items=100)
    try:
        for n in range(20):
            outbox.put(f"job-gone-{n}", "gone", f'{{"text": "passport ZQX-gone-{n:04d}"}}')
            outbox.put(f"job-stays-{n}", "stays", f'{{"text": "passport ZQX-stays-{n:04d}"}}')
        assert files_holding(tmp_path, "ZQX-gone-")

        assert outbox.delete_user("gone") == 20

        assert files_holding(tmp_path, "ZQX-gone-") == []
        assert len(outbox) == 20
        assert {item.user_id for item in outbox.oldest(100)} == {"stays"}
    finally:
        outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite3", max_items=100)
    try:
        assert [item.job_id for item in reopened.oldest(100)] == [f"job-stays-{n}" for n in range(20)]
    finally:
        reopened.close()
