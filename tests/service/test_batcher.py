"""Dynamic batching's bounded queue: room is taken at admission, before any decoding, and the
load policy sees every clip in the server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.batcher import RATE_WINDOW_S, Batcher, Demand, QueueFullError


def _batcher(seen: list, max_queue: int = 4) -> Batcher:
    def run(clips: np.ndarray, rung: int) -> np.ndarray:
        return np.zeros((len(clips), 2), np.float32)

    def choose(demand: Demand) -> int:
        seen.append(demand)
        return 0

    return Batcher(run, max_batch=8, max_wait_ms=1, max_queue=max_queue, choose=choose)


def _summary(seen: list[Demand]) -> list[list[tuple[int, bool]]]:
    return [[(w.clips, w.decoded) for w in demand.backlog] for demand in seen]


def test_admission_holds_room_while_decoding_and_hands_it_to_the_queue():
    async def scenario():
        seen: list[Demand] = []
        batcher = _batcher(seen)
        batcher.start()
        with batcher.admission(3) as ticket:  # a request of 3 views is decoding
            assert batcher.load == 3
            with pytest.raises(QueueFullError, match="3 clips are waiting"), batcher.admission(2):
                pass  # refused before it decodes anything
            with pytest.raises(QueueFullError):
                await batcher.submit(np.zeros((2, 1)))  # a tensor request sees the same bound
            assert batcher.load == 3  # the refusals took nothing
            logits, _, rung = await batcher.submit(np.zeros((3, 1)), ticket=ticket)  # the hold becomes queue
            assert logits.shape == (3, 2) and rung == 0
        assert batcher.load == 0 and _summary(seen) == [
            [(3, True)]
        ]  # the policy was asked with the clips in the server
        with batcher.admission(4):
            pass  # released: the whole queue is free again
        with batcher.admission(1):
            assert batcher.load == 1
        assert batcher.load == 0  # a request that fails while decoding gives its room back
        await batcher.stop()

    asyncio.run(scenario())


def test_the_policy_counts_clips_still_decoding():
    async def scenario():
        seen: list[Demand] = []
        batcher = _batcher(seen, max_queue=16)
        batcher.start()
        with batcher.admission(5), batcher.admission(1) as ticket:
            await batcher.submit(np.zeros((1, 1)), ticket=ticket)
        assert _summary(seen) == [[(1, True), (5, False)]]  # the 1 being batched, then 5 decoding
        assert seen[0].clips_per_s == pytest.approx(6 / RATE_WINDOW_S)  # both were admitted just now
        assert seen[0].backlog[1].age_s >= seen[0].backlog[0].age_s  # ages count from admission: the 5 came first
        await batcher.stop()

    asyncio.run(scenario())


def test_the_arrival_rate_forgets_what_came_before_its_window(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("service.batcher.time.perf_counter", lambda: clock[0])
    batcher = _batcher([], max_queue=16)
    with batcher.admission(4):
        pass
    assert batcher.demand().clips_per_s == pytest.approx(4 / RATE_WINDOW_S)
    clock[0] += RATE_WINDOW_S / 2
    with batcher.admission(2):
        assert batcher.demand().clips_per_s == pytest.approx(6 / RATE_WINDOW_S)
    clock[0] += RATE_WINDOW_S * 0.75  # the first 4 are older than the window now
    assert batcher.demand().clips_per_s == pytest.approx(2 / RATE_WINDOW_S)
    assert batcher.demand().backlog == []  # and nothing is in the server


def test_a_refuse_rule_turns_a_request_away_before_it_takes_room():
    async def scenario():
        asked: list[tuple[int, int | None, int]] = []

        def refuse(demand: Demand, clips: int, rung: int | None) -> QueueFullError | None:
            asked.append((clips, rung, sum(w.clips for w in demand.backlog)))
            return QueueFullError("too late", reason="late", retry_after_s=3) if clips > 2 else None

        batcher = Batcher(lambda c, r: np.zeros((len(c), 2)), 8, 1, 16, refuse=refuse)
        batcher.start()
        with batcher.admission(2, rung=1):
            with pytest.raises(QueueFullError, match="too late") as err, batcher.admission(3):
                pass
            assert err.value.reason == "late" and err.value.retry_after_s == 3
            assert batcher.load == 2  # the refused request took nothing
        assert asked == [(2, 1, 0), (3, None, 2)]  # asked with the clips already in the server
        await batcher.stop()

    asyncio.run(scenario())
