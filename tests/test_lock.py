"""The lock one conversation thread's turns take, from threads and coroutines alike."""

from __future__ import annotations

import asyncio
import threading
import time

from context_distill._lock import DualLock


def test_threads_and_coroutines_exclude_each_other() -> None:
    lock = DualLock()
    inside = 0
    overlaps = 0
    guard = threading.Lock()

    def enter() -> None:
        nonlocal inside, overlaps
        with guard:
            inside += 1
            overlaps += inside > 1

    def leave() -> None:
        nonlocal inside
        with guard:
            inside -= 1

    def worker() -> None:
        for _ in range(200):
            with lock:
                enter()
                time.sleep(0)
                leave()

    async def coroutine() -> None:
        for _ in range(200):
            await lock.aacquire()
            try:
                enter()
                await asyncio.sleep(0)
                leave()
            finally:
                lock.release()

    async def main() -> None:
        await asyncio.gather(*(coroutine() for _ in range(4)))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    asyncio.run(main())
    for t in threads:
        t.join()
    assert overlaps == 0
    assert not lock.locked()


def test_a_waiting_coroutine_does_not_block_its_loop() -> None:
    """The lock is released only once the loop has run 20 ticks while a coroutine
    waits for it: a waiter that blocked its loop would wait forever (timeout)."""
    lock = DualLock()
    lock.acquire()  # held by "another thread"
    ticked = threading.Event()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1
            if ticks == 20:
                ticked.set()

    def releaser() -> None:
        if ticked.wait(30):
            lock.release()

    async def main() -> int:
        tick = asyncio.create_task(ticker())
        threading.Thread(target=releaser, daemon=True).start()
        await asyncio.wait_for(lock.aacquire(), 30)
        seen = ticks
        lock.release()
        tick.cancel()
        return seen

    assert asyncio.run(main()) >= 20


def test_waiters_get_the_lock_in_arrival_order() -> None:
    lock = DualLock()
    order: list[int] = []

    async def main() -> None:
        await lock.aacquire()

        async def waiter(n: int) -> None:
            await lock.aacquire()
            order.append(n)
            lock.release()

        tasks = []
        for n in range(5):
            tasks.append(asyncio.create_task(waiter(n)))
            await asyncio.sleep(0)  # let it queue up
        lock.release()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert order == [0, 1, 2, 3, 4]


def test_a_cancelled_waiter_passes_the_lock_on() -> None:
    lock = DualLock()

    async def main() -> bool:
        await lock.aacquire()
        first = asyncio.create_task(lock.aacquire())
        await asyncio.sleep(0)
        second_done = asyncio.Event()

        async def second() -> None:
            await lock.aacquire()
            second_done.set()
            lock.release()

        task = asyncio.create_task(second())
        await asyncio.sleep(0)
        first.cancel()
        lock.release()
        await asyncio.wait_for(second_done.wait(), 2)
        await task
        return lock.locked()

    assert asyncio.run(main()) is False
