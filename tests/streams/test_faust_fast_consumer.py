"""The Faust consumer's wait_first fast path (streams/app.py): a record handed to the
conductor without waiting makes no tasks; one that waits (a full stream buffer) or a
suspended flow goes through mode's wait_first with the rest of the callback, which still
completes, still sees its results and exceptions, and can still be cancelled."""
from __future__ import annotations

import asyncio

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.app import _Consumer


class Probe:
    def __init__(self):
        self.slow_calls = 0


@pytest.fixture
def consumer(monkeypatch):
    """A _Consumer with only what wait_first reads, mode's wait_first counted."""
    probe = Probe()

    async def counted(self, *coros, timeout=None):
        probe.slow_calls += 1
        done, pending = await asyncio.wait([asyncio.ensure_future(c) for c in coros],
                                           return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()
        return [f.result() for f in done if not f.cancelled()]

    monkeypatch.setattr(faust_aiokafka.Consumer, "wait_first", counted)
    c = object.__new__(_Consumer)
    c.suspend_flow = asyncio.Event()
    c.probe = probe
    return c


async def handed(results, value):
    results.append(value)
    return value


async def waits(fut, results):
    value = await fut
    await asyncio.sleep(0)
    results.append(value)
    return value


def test_a_callback_that_does_not_wait_makes_no_tasks(consumer):
    async def main():
        results = []
        outcome = await consumer.wait_first(handed(results, 1), consumer.suspend_flow.wait())
        assert results == [1] and outcome.results == [1] and consumer.probe.slow_calls == 0

        async def bad():
            raise ValueError("decode failed")
        with pytest.raises(ValueError):
            await consumer.wait_first(bad(), consumer.suspend_flow.wait())
    asyncio.run(main())


def test_a_waiting_callback_or_a_suspended_flow_take_modes_path(consumer):
    async def main():
        results = []
        fut = asyncio.get_running_loop().create_future()
        call = asyncio.ensure_future(consumer.wait_first(waits(fut, results),
                                                         consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        fut.set_result(7)
        assert await call == [7] and results == [7] and consumer.probe.slow_calls == 1

        # a callback that waits is interrupted by the suspended flow (a rebalance)
        stuck = asyncio.get_running_loop().create_future()
        call = asyncio.ensure_future(consumer.wait_first(waits(stuck, results),
                                                         consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()
        assert await asyncio.wait_for(call, 5) == [True] and stuck.cancelled()

        # while the flow is suspended every call goes through mode's wait_first
        await consumer.wait_first(handed(results, 9), consumer.suspend_flow.wait())
        assert consumer.probe.slow_calls == 3
    asyncio.run(main())
