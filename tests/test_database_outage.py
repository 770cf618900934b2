"""The web's connection pool across a PostgreSQL outage: the real server behind a socket relay
that the test unplugs (connections cut, new ones refused) and plugs back in."""

import socket
import threading
import time

import pytest
from django.db import connection
from django.db.backends.postgresql.base import DatabaseWrapper

from finstream.errors import DATABASE_AWAY


class Unpluggable:
    """Relays TCP connections from a local port to `target`; unplug() cuts them and refuses new ones."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.plug()

    def plug(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def unplug(self) -> None:
        with self._lock:
            for sock in [self._listener, *self._sockets]:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass


@pytest.mark.django_db
def test_the_pool_answers_again_as_soon_as_postgresql_is_back_after_a_long_outage(settings):
    relay = Unpluggable((connection.settings_dict["HOST"], int(connection.settings_dict["PORT"])))
    # A request waits 6.5 s for a connection here: longer than the pool's longest wait
    # between attempts, shorter than the wait without its reconnect_timeout.
    pool_options = {**settings.DATABASE_POOL_OPTIONS, "min_size": 1, "max_size": 2, "timeout": 6.5}
    db = DatabaseWrapper({**connection.settings_dict, "HOST": "127.0.0.1", "PORT": relay.port, "CONN_MAX_AGE": 0,
                          "OPTIONS": {**connection.settings_dict["OPTIONS"], "pool": pool_options}},
                         alias="through_the_relay")

    def request() -> bool:
        try:
            with db.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except DATABASE_AWAY:
            return False
        finally:
            db.close()  # back to the pool, as at the end of a request

    try:
        assert request()
        relay.unplug()
        # Twenty seconds of requests failing. psycopg_pool's own waits between attempts (1, 2, 4, 8,
        # 16 s, +-10 %) would put its next attempt 8 to 14 s after the outage, and the web would answer
        # 503 meanwhile with PostgreSQL up. Giving up after 10 s and starting afresh at the next request,
        # the pool never waits more than about 4.4 s between attempts.
        outage_ends = time.monotonic() + 20
        while time.monotonic() < outage_ends:
            assert not request()
            time.sleep(0.5)
        relay.plug()
        assert request()  # the first request after the outage, within the pool's timeout
    finally:
        relay.unplug()
        db.close_pool()
