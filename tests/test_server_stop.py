"""Stopping the HTTP server is safe whatever state waitress's loop is in: running, ended, or running
on after waitress closed its trigger; it never writes to a descriptor the server no longer owns."""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Callable

import pytest
from waitress.server import create_server

from app import stop_server
from conftest import wait_for


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def server() -> Any:
    server = create_server(hello, host="127.0.0.1", port=0, threads=2)
    yield server
    server.task_dispatcher.shutdown(timeout=1)


def serve(server: Any) -> threading.Thread:
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return thread


def port_is_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_running_server_stops_and_frees_its_port(server) -> None:
    thread = serve(server)
    assert not port_is_closed(server.effective_port)
    stop_server(server, thread, timeout=10)
    assert not thread.is_alive() and port_is_closed(server.effective_port)


@pytest.mark.skipif(os.name == "nt", reason="the trigger is a socket pair on Windows, a pipe on POSIX")
def test_stopping_again_never_writes_to_the_closed_triggers_descriptor(server) -> None:
    thread = serve(server)
    stop_server(server, thread, timeout=10)
    # The lowest free descriptor numbers, the closed trigger's among them, go to a new pipe: a second
    # stop that pulled the old trigger would write into this pipe (or fail on its read end).
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(read_end, False)
        stop_server(server, thread, timeout=10)
        with pytest.raises(BlockingIOError):
            os.read(read_end, 1)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_loop_that_ended_on_its_own_has_its_sockets_closed_by_the_stop(server) -> None:
    # waitress's run() returns on SystemExit without closing anything: the thread is gone, the port open.
    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    stop_server(server, ended, timeout=10)
    assert port_is_closed(server.effective_port)


def test_a_loop_running_on_after_waitress_closed_its_trigger_still_stops(server) -> None:
    thread = serve(server)
    # As waitress does to a dispatcher whose handler raised: the trigger closes, the loop runs on.
    server.trigger.pull_trigger(server.trigger.close)
    wait_for(lambda: not server.trigger.connected, timeout=10)
    started = time.monotonic()
    stop_server(server, thread, timeout=10)
    assert not thread.is_alive() and port_is_closed(server.effective_port)
    assert time.monotonic() - started < 5


@pytest.mark.skipif(os.name == "nt", reason="the trigger is a socket pair on Windows, a pipe on POSIX")
def test_a_trigger_whose_descriptor_was_closed_under_it_still_stops_the_loop(server, caplog) -> None:
    thread = serve(server)
    # The pipe stays open through a copy (the loop sees no end of file), but the trigger's own
    # descriptor number is closed: pulling it fails with EBADF, as once seen at a test's teardown.
    kept = os.dup(server.trigger.trigger)
    os.close(server.trigger.trigger)
    try:
        started = time.monotonic()
        stop_server(server, thread, timeout=10)
        assert not thread.is_alive() and port_is_closed(server.effective_port)
        assert time.monotonic() - started < 5
        assert "through a new trigger" in caplog.text
    finally:
        os.close(kept)
