"""A thread-scoped setting holds inside its block on its own thread only, nests, and is restored however the block
ends."""

from __future__ import annotations

import threading

import pytest

from braid.common.thread_scoped import ThreadScoped


def test_scopes_nest_and_restore_the_value_before_them():
    setting: ThreadScoped[int | None] = ThreadScoped(None)
    assert setting.get() is None
    with setting.scope(2):
        assert setting.get() == 2
        with setting.scope(1):
            assert setting.get() == 1
        assert setting.get() == 2
    assert setting.get() is None


def test_a_block_that_raises_still_restores():
    setting = ThreadScoped("off")
    with pytest.raises(RuntimeError), setting.scope("on"):
        raise RuntimeError("boom")
    assert setting.get() == "off"


def test_other_threads_see_their_own_value():
    setting = ThreadScoped(0)
    entered, release, seen = threading.Event(), threading.Event(), []

    def hold() -> None:
        with setting.scope(7):
            entered.set()
            release.wait(5)

    worker = threading.Thread(target=hold)
    worker.start()
    entered.wait(5)
    seen.append(setting.get())  # the worker's scope is open now
    release.set()
    worker.join()
    assert seen == [0]
