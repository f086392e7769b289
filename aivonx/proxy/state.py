"""Runtime state shared by whoever serves requests: active counters and node statuses.

`MemoryState` is for one process. `RedisState` shares counters and statuses between every
worker and instance; each process still keeps a local copy of the statuses so routing reads
memory, and pulls the shared copy only when its version stamp moved.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, TypeVar

from redis import Redis, RedisError

from aivonx.proxy.strategies import pick_least_active
from aivonx.proxy.types import NodeSpec, NodeStatus

log = logging.getLogger(__name__)

T = TypeVar("T")


class State(Protocol):
    shared: bool
    generation: int

    def incr(self, node_id: int, limit: int = 0) -> bool: ...
    def incr_least_active(self, candidates: Sequence[NodeSpec], turn: int) -> NodeSpec | None: ...
    def decr(self, node_id: int, announce: bool = False) -> None: ...
    def watch_slots(self, callback: Callable[[], None]) -> None: ...
    def active_counts(self, node_ids: Iterable[int]) -> dict[int, int]: ...
    def statuses(self) -> dict[int, NodeStatus]: ...
    def put_status(self, status: NodeStatus) -> None: ...
    def forget_node(self, node_id: int) -> None: ...
    def refresh(self) -> bool: ...
    def exclusive(self, name: str, ttl: float) -> Iterator[bool]: ...
    def release_lease(self) -> None: ...


class MemoryState:
    """Counters and statuses of this process only."""

    shared = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: defaultdict[int, int] = defaultdict(int)
        self._statuses: dict[int, NodeStatus] = {}
        self.generation = 0  # moves on every status change; the manager rebuilds its index then

    def incr(self, node_id: int, limit: int = 0) -> bool:
        """Count a request on the node unless that would pass `limit` (0: no limit)."""
        with self._lock:
            if limit and self._active[node_id] >= limit:
                return False
            self._active[node_id] += 1
        return True

    def incr_least_active(self, candidates: Sequence[NodeSpec], turn: int) -> NodeSpec | None:
        """Pick by `strategies.pick_least_active` and count the request on it, atomically."""
        with self._lock:
            node = pick_least_active(candidates, self._active, turn)
            if node is not None:
                self._active[node.id] += 1
        return node

    def decr(self, node_id: int, announce: bool = False) -> None:
        with self._lock:
            self._active[node_id] -= 1

    def watch_slots(self, callback: Callable[[], None]) -> None:
        # One process: the manager wakes its own queue on release.
        pass

    def counts(self) -> dict[int, int]:
        """Every non-zero counter of this process."""
        with self._lock:
            return {node_id: count for node_id, count in self._active.items() if count}

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
            # Counters stay: requests still in flight on the node release into them.
            self._statuses = {k: v for k, v in self._statuses.items() if k != node_id}
            self.generation += 1

    def refresh(self) -> bool:
        return False

    @contextmanager
    def exclusive(self, name: str, ttl: float) -> Iterator[bool]:
        # One process: APScheduler's max_instances=1 already keeps a job from overlapping.
        yield True

    def release_lease(self) -> None:
        pass  # one process: its counts end with it


# Sum of one node's counters over the live processes; a process whose lease key expired
# (it crashed) is dropped from the set, and its counts with it.
SUM_COUNTS = """
local totals = {}
for i = 1, #ARGV do totals[i] = 0 end
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', key) == 1 then
    local values = redis.call('HMGET', key, unpack(ARGV))
    for i = 1, #ARGV do
      local n = tonumber(values[i]) or 0
      if n > 0 then totals[i] = totals[i] + n end
    end
  else
    redis.call('SREM', KEYS[1], key)
  end
end
return totals
"""

# Count one request of this process on a node unless the node is at its limit (ARGV[2],
# 0 for none) across all processes: check and increment in one atomic step.
INCR_BELOW_LIMIT = """
local node, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if limit > 0 then
  local total = 0
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local n = tonumber(redis.call('HGET', key, node)) or 0
    if n > 0 then total = total + n end
  end
  if total >= limit then return 0 end
end
redis.call('HINCRBY', KEYS[2], node, 1)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('SADD', KEYS[1], KEYS[2])
return 1
"""

# strategies.pick_least_active over the counts of all live processes, then count the request
# of this process on the chosen node: one atomic step. ARGV: lease ms, turn, then per
# candidate its id, weight, limit (0: none) and priority. Returns the id, or nil when all are full.
PICK_LEAST_ACTIVE = """
local ttl, turn = tonumber(ARGV[1]), tonumber(ARGV[2])
local live = {}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', key) == 1 then live[#live + 1] = key else redis.call('SREM', KEYS[1], key) end
end
local best_priority, best_load, tied = nil, nil, {}
for i = 3, #ARGV, 4 do
  local node, weight, limit, priority = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local active = 0
  for _, key in ipairs(live) do
    local n = tonumber(redis.call('HGET', key, node)) or 0
    if n > 0 then active = active + n end
  end
  if limit == 0 or active < limit then
    local load = active / weight
    if best_priority == nil or priority < best_priority or (priority == best_priority and load < best_load) then
      best_priority, best_load, tied = priority, load, {node}
    elseif priority == best_priority and load == best_load then
      tied[#tied + 1] = node
    end
  end
end
if #tied == 0 then return false end
local chosen = tied[(turn % #tied) + 1]
redis.call('HINCRBY', KEYS[2], chosen, 1)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('SADD', KEYS[1], KEYS[2])
return chosen
"""


class RedisState:
    """Counters and statuses in Redis, with this process's copy of the statuses.

    Active-request counters are kept per process: each process owns one Redis hash (node
    id -> its requests in flight) under a lease that it renews every sync and that expires
    when the process dies, so a crashed worker's requests stop counting. The process's own
    counts are the truth: when Redis failed or lost the hash (restart), the next `refresh`
    writes them back whole. Until then routing counts on this process alone.
    """

    shared = True

    def __init__(self, client: Redis, prefix: str = "aivonx:", lease_seconds: float = 15.0) -> None:
        self.client = client
        self.prefix = prefix
        self._procs_key = f"{prefix}procs"
        self._mine_key = f"{prefix}active:{uuid.uuid4().hex}"
        self._lease_ms = int(lease_seconds * 1000)
        self._slots_channel = f"{prefix}slots"
        self._status_key = f"{prefix}status"
        self._status_version_key = f"{prefix}status_version"
        self._local = MemoryState()
        self._seen_version: int | None = None
        self._degraded = False
        # Until this process's counts are written whole (at start, after a Redis failure),
        # counting stays local; `_in_flight` counts Redis counter calls under way, which
        # the whole write waits out so that none lands after its snapshot.
        self._rewrite = True
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._sum_counts = client.register_script(SUM_COUNTS)
        self._incr_below_limit = client.register_script(INCR_BELOW_LIMIT)
        self._pick_least_active = client.register_script(PICK_LEAST_ACTIVE)
        self._slot_callback: Callable[[], None] | None = None
        self._listener: threading.Thread | None = None

    @property
    def generation(self) -> int:
        return self._local.generation

    def _redis_failed(self, what: str, exc: Exception) -> None:
        if not self._degraded:
            log.warning("redis unavailable (%s): %s; using this process's state", what, exc)
        self._degraded = True
        self._rewrite = True

    def _counting_in_redis(self) -> bool:
        with self._in_flight_lock:
            if self._degraded or self._rewrite:
                return False
            self._in_flight += 1
            return True

    def _counted(self) -> None:
        with self._in_flight_lock:
            self._in_flight -= 1

    def _count(self, in_redis: Callable[[], T], locally: Callable[[], T]) -> T:
        """A counting call in Redis, or on this process's counts while Redis does not count
        (degraded, or the counts are being written back whole) or fails now."""
        if not self._counting_in_redis():
            return locally()
        try:
            return in_redis()
        except RedisError as exc:
            self._redis_failed("incr", exc)
            return locally()
        finally:
            self._counted()

    def incr(self, node_id: int, limit: int = 0) -> bool:
        def in_redis() -> bool:
            keys, args = [self._procs_key, self._mine_key], [node_id, limit, self._lease_ms]
            counted = bool(self._incr_below_limit(keys=keys, args=args, client=self.client))
            if counted:
                self._local.incr(node_id)
            return counted

        return self._count(in_redis, lambda: self._local.incr(node_id, limit))

    def incr_least_active(self, candidates: Sequence[NodeSpec], turn: int) -> NodeSpec | None:
        def in_redis() -> NodeSpec | None:
            args: list[int] = [self._lease_ms, turn]
            for node in candidates:
                args += (node.id, max(node.weight, 1), node.max_concurrent, node.priority)
            chosen = self._pick_least_active(keys=[self._procs_key, self._mine_key], args=args, client=self.client)
            if chosen is None:
                return None
            node_id = int(chosen)
            self._local.incr(node_id)
            return next(node for node in candidates if node.id == node_id)

        return self._count(in_redis, lambda: self._local.incr_least_active(candidates, turn))

    def decr(self, node_id: int, announce: bool = False) -> None:
        self._local.decr(node_id)
        if not self._counting_in_redis():
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hincrby(self._mine_key, str(node_id), -1)
                if announce:
                    pipe.publish(self._slots_channel, node_id)
                pipe.execute()
        except RedisError as exc:
            self._redis_failed("decr", exc)
        finally:
            self._counted()

    def active_counts(self, node_ids: Iterable[int]) -> dict[int, int]:
        ids = list(node_ids)
        if self._degraded or not ids:
            return self._local.active_counts(ids)
        try:
            values = self._sum_counts(keys=[self._procs_key], args=ids, client=self.client)
        except RedisError as exc:
            self._redis_failed("read counters", exc)
            return self._local.active_counts(ids)
        return {i: int(v) for i, v in zip(ids, values, strict=True)}

    def watch_slots(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever any process frees a slot on a node with a concurrency
        limit. Started by the first queued request; later calls do nothing."""
        if self._listener is not None:
            return
        self._slot_callback = callback
        self._listener = threading.Thread(target=self._listen, name="aivonx-slots", daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        while True:
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._slots_channel)
                while True:
                    if pubsub.get_message(timeout=1.0) is not None and self._slot_callback is not None:
                        self._slot_callback()
            except Exception as exc:  # Redis gone: queued requests poll meanwhile
                log.debug("slot announcements interrupted: %s", exc)
                time.sleep(1.0)

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
                pipe.incr(self._status_version_key)
                pipe.execute()
        except RedisError as exc:
            self._redis_failed("forget node", exc)

    def refresh(self) -> bool:
        """Renew this process's counter lease (writing its counts back whole when Redis
        failed or forgot them); reload statuses if another process changed them."""
        try:
            self._renew_lease()
            version = int(self.client.get(self._status_version_key) or 0)
            if version == self._seen_version:
                self._degraded = False
                return False
            if version == 0 and self._local.statuses():
                # Redis restarted empty: what this process knows beats routing to nobody.
                self._write_back_statuses()
                self._degraded = False
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

    def _write_back_statuses(self) -> None:
        statuses = self._local.statuses()
        with self.client.pipeline() as pipe:
            pipe.hset(self._status_key, mapping={str(k): json.dumps(v.to_json()) for k, v in statuses.items()})
            pipe.incr(self._status_version_key)
            _, self._seen_version = pipe.execute()
        log.info("redis had no node statuses (restarted?); this process's %d written back", len(statuses))

    def _renew_lease(self) -> None:
        # A restarted Redis has lost the hash: `epoch` (set only by a whole write) is gone.
        if not self._rewrite and self.client.hexists(self._mine_key, "epoch"):
            with self.client.pipeline(transaction=False) as pipe:
                pipe.pexpire(self._mine_key, self._lease_ms)
                pipe.sadd(self._procs_key, self._mine_key)
                pipe.execute()
            return
        with self._in_flight_lock:
            self._rewrite = True  # new counter calls stay local from here
        deadline = time.monotonic() + 5.0
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.001)
        counts = self._local.counts()
        with self.client.pipeline() as pipe:  # MULTI: the hash is never seen half written
            pipe.delete(self._mine_key)
            pipe.hset(self._mine_key, mapping={"epoch": 1, **{str(k): v for k, v in counts.items()}})
            pipe.pexpire(self._mine_key, self._lease_ms)
            pipe.sadd(self._procs_key, self._mine_key)
            pipe.execute()
        with self._in_flight_lock:
            self._rewrite = False
        if self._degraded:
            log.info("redis answers again; this process's counters written back")

    def release_lease(self) -> None:
        """The process is stopping: its counters stop counting now, not when the lease expires."""
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(self._mine_key)
                pipe.srem(self._procs_key, self._mine_key)
                pipe.execute()
        except RedisError:
            pass

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
