"""Runtime state shared by whoever serves requests: active counters and node statuses.

`MemoryState` is for one process. `RedisState` shares counters and statuses between every
worker and instance; each process still keeps a local copy of the statuses so routing reads
memory, and pulls the shared copy only when its version stamp moved.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

from redis import Redis, RedisError

from aivonx.proxy.types import NodeStatus

log = logging.getLogger(__name__)


class State(Protocol):
    shared: bool
    generation: int

    def incr(self, node_id: int) -> bool: ...
    def decr(self, node_id: int, shared: bool) -> None: ...
    def active_counts(self, node_ids: Iterable[int]) -> dict[int, int]: ...
    def statuses(self) -> dict[int, NodeStatus]: ...
    def put_status(self, status: NodeStatus) -> None: ...
    def forget_node(self, node_id: int) -> None: ...
    def refresh(self) -> bool: ...
    def exclusive(self, name: str, ttl: float) -> Iterator[bool]: ...


class MemoryState:
    """Counters and statuses of this process only."""

    shared = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: defaultdict[int, int] = defaultdict(int)
        self._statuses: dict[int, NodeStatus] = {}
        self.generation = 0  # moves on every status change; the manager rebuilds its index then

    def incr(self, node_id: int) -> bool:
        with self._lock:
            self._active[node_id] += 1
        return False

    def decr(self, node_id: int, shared: bool = False) -> None:
        with self._lock:
            self._active[node_id] -= 1

    def active_counts(self, node_ids: Iterable[int]) -> dict[int, int]:
        active = self._active
        return {node_id: active.get(node_id, 0) for node_id in node_ids}

    def statuses(self) -> dict[int, NodeStatus]:
        return self._statuses

    def put_status(self, status: NodeStatus) -> None:
        with self._lock:
            self._statuses = {**self._statuses, status.node_id: status}
            self.generation += 1

    def replace_statuses(self, statuses: dict[int, NodeStatus]) -> None:
        with self._lock:
            self._statuses = statuses
            self.generation += 1

    def forget_node(self, node_id: int) -> None:
        with self._lock:
            self._statuses = {k: v for k, v in self._statuses.items() if k != node_id}
            self._active.pop(node_id, None)
            self.generation += 1

    def refresh(self) -> bool:
        return False

    @contextmanager
    def exclusive(self, name: str, ttl: float) -> Iterator[bool]:
        # One process: APScheduler's max_instances=1 already keeps a job from overlapping.
        yield True


class RedisState:
    """Counters and statuses in Redis, with this process's copy of the statuses.

    When Redis fails, counting falls back to this process (and says so in the log);
    decrements owed to Redis are kept and paid back when it answers again.
    """

    shared = True

    def __init__(self, client: Redis, prefix: str = "aivonx:") -> None:
        self.client = client
        self.prefix = prefix
        self._active_key = f"{prefix}active"
        self._status_key = f"{prefix}status"
        self._status_version_key = f"{prefix}status_version"
        self._local = MemoryState()
        self._seen_version: int | None = None
        self._owed: defaultdict[int, int] = defaultdict(int)
        self._owed_lock = threading.Lock()
        self._degraded = False

    @property
    def generation(self) -> int:
        return self._local.generation

    def _redis_failed(self, what: str, exc: Exception) -> None:
        if not self._degraded:
            log.warning("redis unavailable (%s): %s; using this process's state", what, exc)
        self._degraded = True

    def incr(self, node_id: int) -> bool:
        try:
            self.client.hincrby(self._active_key, str(node_id), 1)
        except RedisError as exc:
            self._redis_failed("incr", exc)
            self._local.incr(node_id)
            return False
        self._degraded = False
        return True

    def decr(self, node_id: int, shared: bool = True) -> None:
        if not shared:
            self._local.decr(node_id)
            return
        try:
            self.client.hincrby(self._active_key, str(node_id), -1)
        except RedisError as exc:
            self._redis_failed("decr", exc)
            with self._owed_lock:
                self._owed[node_id] += 1

    def active_counts(self, node_ids: Iterable[int]) -> dict[int, int]:
        ids = list(node_ids)
        local = self._local.active_counts(ids)
        if not ids:
            return local
        try:
            values = self.client.hmget(self._active_key, [str(i) for i in ids])
        except RedisError as exc:
            self._redis_failed("read counters", exc)
            return local
        return {i: int(v or 0) + local[i] for i, v in zip(ids, values, strict=True)}

    def statuses(self) -> dict[int, NodeStatus]:
        return self._local.statuses()

    def put_status(self, status: NodeStatus) -> None:
        self._local.put_status(status)
        try:
            with self.client.pipeline() as pipe:
                pipe.hset(self._status_key, str(status.node_id), json.dumps(status.to_json()))
                pipe.incr(self._status_version_key)
                _, version = pipe.execute()
        except RedisError as exc:
            self._redis_failed("write status", exc)
            return
        # Our own write needs no reload unless someone else wrote in between.
        if self._seen_version is not None and version == self._seen_version + 1:
            self._seen_version = version

    def forget_node(self, node_id: int) -> None:
        self._local.forget_node(node_id)
        try:
            with self.client.pipeline() as pipe:
                pipe.hdel(self._status_key, str(node_id))
                pipe.hdel(self._active_key, str(node_id))
                pipe.incr(self._status_version_key)
                pipe.execute()
        except RedisError as exc:
            self._redis_failed("forget node", exc)

    def refresh(self) -> bool:
        """Pay back owed decrements; reload statuses if another process changed them."""
        try:
            self._pay_owed()
            version = int(self.client.get(self._status_version_key) or 0)
            if version == self._seen_version:
                return False
            raw = self.client.hgetall(self._status_key)
        except RedisError as exc:
            self._redis_failed("refresh", exc)
            return False
        self._degraded = False
        self._seen_version = version
        statuses = {}
        for value in raw.values():
            status = NodeStatus.from_json(json.loads(value))
            statuses[status.node_id] = status
        self._local.replace_statuses(statuses)
        return True

    def _pay_owed(self) -> None:
        with self._owed_lock:
            owed, self._owed = self._owed, defaultdict(int)
        if not owed:
            return
        try:
            with self.client.pipeline() as pipe:
                for node_id, count in owed.items():
                    pipe.hincrby(self._active_key, str(node_id), -count)
                pipe.execute()
        except RedisError:
            with self._owed_lock:
                for node_id, count in owed.items():
                    self._owed[node_id] += count
            raise

    @contextmanager
    def exclusive(self, name: str, ttl: float) -> Iterator[bool]:
        """A Redis lock (SET NX PX, released by compare-and-delete) held for the block."""
        lock = self.client.lock(f"{self.prefix}lock:{name}", timeout=ttl, blocking=False)
        held = False
        try:
            held = acquired = lock.acquire()
        except RedisError as exc:
            # Without Redis each process checks its nodes itself: more probes, but nodes
            # still come back from standby.
            self._redis_failed("lock", exc)
            acquired = True
        try:
            yield acquired
        finally:
            if held:
                try:
                    lock.release()
                except Exception as exc:  # expired meanwhile or Redis gone: the TTL frees it
                    log.warning("health lock release failed: %s", exc)
