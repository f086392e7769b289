"""A loopback TCP forwarder that a test can cut and restore: a dependency outage on demand.

Point a client (the app's Redis URL, its database URL) at ``proxy.port`` instead of the real
server. ``cut()`` closes every forwarded connection and the listening socket, so the client
sees its connections die and new connections refused, exactly as when the server is down;
``restore()`` listens on the same port again. ``blackhole()`` is the nastier outage of a host
that vanished without a word: open connections are closed, new ones are accepted (the
handshake completes) but never answered, so only the client's own timeouts end them. The
real server (shared with other tests) is never touched::

    with TcpFaultProxy(6379) as fault:
        url = f"redis://127.0.0.1:{fault.port}/0"
        ...
        fault.cut()
        ...
        fault.restore()
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Self

__all__ = ["TcpFaultProxy"]

_BUFFER = 65536


class TcpFaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0  # chosen at the first start, then kept across cut/restore
        self.accepted = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accepter: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._blackhole = False

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        self.restore()
        return self

    def restore(self) -> None:
        """Listen (again, on the same port) and forward new connections."""
        if self._blackhole:
            self.cut()  # drops the held connections and the silent listener
        self._listen()

    def _listen(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(128)
            # accept() polls, so closing the listener from cut() stops the loop promptly.
            listener.settimeout(0.1)
            self.port = listener.getsockname()[1]
            self._listener = listener
            self._accepter = threading.Thread(
                target=self._accept_loop, args=(listener,), name=f"tcp-fault-{self.port}", daemon=True
            )
            self._accepter.start()

    def cut(self, *, reset: bool = False) -> None:
        """Refuse new connections and close the open ones (with `reset`, by TCP RST)."""
        with self._lock:
            listener, self._listener = self._listener, None
            accepter, self._accepter = self._accepter, None
            sockets, self._sockets = self._sockets, set()
            self._blackhole = False
        if listener is not None:
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                if reset:
                    # Linger 0: close() sends RST; SHUT_RD (which sends nothing) wakes the pump's recv.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if accepter is not None:
            accepter.join(2)

    def blackhole(self) -> None:
        """Close the open connections; accept new ones and never answer (until restore/cut)."""
        self.cut()
        with self._lock:
            self._blackhole = True
        self._listen()

    def stop(self) -> None:
        self.cut()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- forwarding -----------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by cut()
            if self._blackhole:
                with self._lock:
                    self._sockets.add(client)  # held open, never read or answered
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()  # the real server is down: so is this one
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_BUFFER):
                sink.sendall(data)
        except OSError:
            pass
        # One side finished or failed: end the pair, as a server closing its socket would.
        with self._lock:
            self._sockets.discard(source)
            self._sockets.discard(sink)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
