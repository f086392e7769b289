"""The API keys this process accepts, held in memory: one SHA-256 and a dict lookup per request.

`Runtime.sync()` replaces the set whenever the configuration's version stamp moves (creating
or revoking a key bumps it) and saves the recorded uses once per sync interval, never per
request.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping


def hash_api_key(key: str) -> str:
    # API keys are 256 random bits: a fast hash is enough and keeps the check O(1) per request.
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self) -> None:
        self._ids_by_hash: dict[str, int] = {}
        self._last_used: dict[int, float] = {}
        self._lock = threading.Lock()

    def replace(self, ids_by_hash: Mapping[str, int]) -> None:
        """Accept exactly these keys (SHA-256 hex -> key id) from now on."""
        # One reference swap: a request sees either the old set or the new one.
        self._ids_by_hash = dict(ids_by_hash)

    def __len__(self) -> int:
        return len(self._ids_by_hash)

    def use(self, key: str) -> bool:
        """Whether `key` is valid; a valid use is remembered for the next save."""
        key_id = self._ids_by_hash.get(hash_api_key(key))
        if key_id is None:
            return False
        used_at = time.time()
        with self._lock:
            self._last_used[key_id] = used_at
        return True

    def take_used(self) -> dict[int, float]:
        """Key id -> time of its last use since the previous call (Unix seconds)."""
        with self._lock:
            used, self._last_used = self._last_used, {}
        return used

    def put_back(self, used: Mapping[int, float]) -> None:
        """Uses that could not be saved wait for the next save; a newer use wins."""
        with self._lock:
            for key_id, used_at in used.items():
                self._last_used[key_id] = max(used_at, self._last_used.get(key_id, used_at))
