"""The Faust agent's pipelined writes (streams/app.py): a batch's messages are acked to the
consumer only once the task writing them has finished, never when take_events acks its own
reference, and a cancelled write (SIGTERM) leaves them unacked."""
from __future__ import annotations

import asyncio
import types

from faust.types import TP
from faust.types.tuples import ConsumerMessage

from streams.app import StreamWorker


class Consumer:
    def __init__(self):
        self.acked = []

    def ack(self, message):
        self.acked.append(message.offset)
        return True


def worker_with(finish):
    """A StreamWorker with only what _write_and_ack reads."""
    worker = object.__new__(StreamWorker)
    worker.app = types.SimpleNamespace(
        consumer=Consumer(),
        sensors=types.SimpleNamespace(on_message_out=lambda tp, offset, message: None))
    worker._lag = {}
    worker.finish = finish
    worker._send_dlq = None
    return worker


def taken(n):
    """Events as take_events hands them: each message referenced by the stream once, and once
    more by the agent (its incref)."""
    events = []
    for offset in range(n):
        message = ConsumerMessage("t", 0, offset, 0.0, 0, None, b"k", b"v", None,
                                  tp=TP("t", 0))
        message.incref(2)
        events.append(types.SimpleNamespace(message=message))
    return events


def stream_acks(events, consumer):
    """What take_events' finally does when the agent body returns: its reference goes."""
    return [e.message.ack(consumer) for e in events]


def test_acked_only_when_the_write_is_durable():
    async def run():
        durable = asyncio.Event()

        async def finish(batch, send):
            await durable.wait()

        worker = worker_with(finish)
        events = taken(3)
        task = asyncio.ensure_future(worker._write_and_ack("batch", events))
        await asyncio.sleep(0)
        assert stream_acks(events, worker.app.consumer) == [False] * 3  # the agent's ref holds
        await asyncio.sleep(0.01)
        assert worker.app.consumer.acked == []
        durable.set()
        await task
        assert worker.app.consumer.acked == [0, 1, 2]
        assert worker._lag == {TP("t", 0): 2}

    asyncio.run(run())


def test_a_cancelled_write_acks_nothing():
    async def run():
        async def finish(batch, send):
            await asyncio.sleep(3600)  # a database outage

        worker = worker_with(finish)
        events = taken(2)
        task = asyncio.ensure_future(worker._write_and_ack("batch", events))
        await asyncio.sleep(0)
        stream_acks(events, worker.app.consumer)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert worker.app.consumer.acked == []
        assert all(not e.message.acked and e.message.refcount == 1 for e in events)

    asyncio.run(run())
