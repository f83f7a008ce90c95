"""When a worker sharing the gateway's process may start jobs (workers.intake)."""

from __future__ import annotations

from workers.intake import Intake, catching_up, job_intake, lag_seconds


def test_without_chats_in_flight_a_poll_reads_and_starts_a_full_batch() -> None:
    assert job_intake(chats_in_flight=False, running=3, waiting=0, full_read_limit=9) == Intake(9, True)


def test_while_chats_are_in_flight_a_job_starts_only_when_every_running_one_waits() -> None:
    assert job_intake(chats_in_flight=True, running=0, waiting=0, full_read_limit=9) == Intake(1, True)
    assert job_intake(chats_in_flight=True, running=1, waiting=0, full_read_limit=9) == Intake(2, False)
    # The running job waits on its LLM: one more may start, and the read reaches one past it.
    assert job_intake(chats_in_flight=True, running=1, waiting=1, full_read_limit=9) == Intake(2, True)
    assert job_intake(chats_in_flight=True, running=3, waiting=2, full_read_limit=9) == Intake(4, False)


def test_jobs_follow_each_other_without_a_poll_only_once_the_worker_is_behind_while_chats_run() -> None:
    assert catching_up(chats_in_flight=True, lag_s=4.9, catch_up_after_s=5) is False
    assert catching_up(chats_in_flight=True, lag_s=5.0, catch_up_after_s=5) is True
    assert catching_up(chats_in_flight=False, lag_s=60, catch_up_after_s=5) is False


def test_the_lag_is_how_long_the_job_had_been_due_and_never_negative() -> None:
    assert lag_seconds(1000.0, 997_000) == 3.0
    assert lag_seconds(1000.0, 1_002_000) == 0.0
