"""`free_port` hands out listening ports that neither an outgoing connection nor an earlier
`free_port` of the same process can be holding (a port clash once failed a test in CI)."""

from __future__ import annotations

import socket

from hirepay_dev import procs


def test_ports_lie_outside_the_kernels_range_for_outgoing_connections() -> None:
    low, high = procs._ephemeral_range()
    ports = [procs.free_port() for _ in range(200)]
    assert all(not low <= port <= high for port in ports)
    assert all(1024 <= port < 65536 for port in ports)


def test_a_port_is_never_handed_out_twice_while_the_range_lasts() -> None:
    # Nothing binds these ports in between: bind(0) would be free to return one of them again.
    ports = [procs.free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)


def test_a_port_something_listens_on_is_skipped() -> None:
    taken: list[socket.socket] = []
    try:
        # Bind the next candidates, so the picker must pass over every one of them.
        procs.free_port()
        with procs._ports_lock:
            upcoming = procs._port_candidates[-5:]
        assert len(upcoming) == 5
        for port in upcoming:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            taken.append(sock)
        port = procs.free_port()
        assert port not in upcoming
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
    finally:
        for sock in taken:
            sock.close()
