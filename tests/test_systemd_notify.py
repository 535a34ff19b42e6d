"""Pruebas de daemon/systemd.py contra un socket AF_UNIX/SOCK_DGRAM real, como el de systemd.

La prueba hace de systemd: abre el socket de notificación (ruta o nombre abstracto ``@``), con
SO_PASSCRED para leer las credenciales que el núcleo adjunta (las que usa ``NotifyAccess=main``),
y comprueba los datagramas exactos.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.systemd import SystemdNotifier, parse_notify_address


class FakeSystemd:
    """Extremo receptor del protocolo sd_notify."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def environ(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value, **extra}

    def receive(self) -> tuple[str, int]:
        """Un datagrama y el PID del emisor (SCM_CREDENTIALS)."""
        self.sock.settimeout(10)
        data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("iII", payload[:12])
        return data.decode(), pid

    def messages(self) -> list[str]:
        """Todos los datagramas pendientes, sin esperar."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        return out


def _bind(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(address)
    return sock


@pytest.fixture(params=["path", "abstract"])
def fake_systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    if request.param == "path":
        path = tmp_path / "notify"
        sock = _bind(str(path))
        fake = FakeSystemd(sock, str(path))
    else:
        name = f"videonote-dl-test/{uuid.uuid4().hex}"
        sock = _bind(b"\0" + name.encode())
        fake = FakeSystemd(sock, "@" + name)
    try:
        yield fake
    finally:
        sock.close()


def test_parse_notify_address() -> None:
    assert parse_notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert parse_notify_address("@abc/def") == b"\0abc/def"
    assert parse_notify_address(None) is None
    assert parse_notify_address("") is None
    assert parse_notify_address("@") is None
    assert parse_notify_address("relative/notify") is None
    assert parse_notify_address("vsock:2:1234") is None


def test_ready_sends_ready_mainpid_and_status_from_this_process(fake_systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(fake_systemd.environ())
    assert notifier.enabled
    notifier.ready("running 0, queued 0, done 0, failed 0, rejected 0")
    data, sender = fake_systemd.receive()
    assert data == f"READY=1\nMAINPID={os.getpid()}\nSTATUS=running 0, queued 0, done 0, failed 0, rejected 0"
    assert sender == os.getpid()
    notifier.ready()
    assert fake_systemd.receive()[0] == f"READY=1\nMAINPID={os.getpid()}"
    assert notifier.failures == 0


def test_status_is_sent_only_when_it_changes(fake_systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(fake_systemd.environ())
    notifier.ready("running 0, queued 1")
    notifier.status("running 0, queued 1")  # igual que el de READY: no se reenvía
    notifier.status("running 1, queued 0")
    notifier.status("running 1, queued 0")
    notifier.status("line one\nline two")  # un salto de línea rompería el protocolo
    notifier.status("running 1, queued 0")
    assert fake_systemd.messages() == [
        f"READY=1\nMAINPID={os.getpid()}\nSTATUS=running 0, queued 1",
        "STATUS=running 1, queued 0",
        "STATUS=line one line two",
        "STATUS=running 1, queued 0",
    ]


def test_reloading_carries_clock_monotonic_in_microseconds(fake_systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(fake_systemd.environ())
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    data, _ = fake_systemd.receive()
    first, second = data.split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_stopping_watchdog_and_extend_timeout(fake_systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(fake_systemd.environ())
    notifier.stopping()
    notifier.stopping("stopping: 2 running")
    notifier.watchdog_ping()
    notifier.extend_timeout(2.5)
    assert fake_systemd.messages() == [
        "STOPPING=1",
        "STOPPING=1\nSTATUS=stopping: 2 running",
        "WATCHDOG=1",
        "EXTEND_TIMEOUT_USEC=2500000",
    ]


def test_reads_os_environ_by_default(fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = SystemdNotifier()
    assert notifier.enabled
    assert notifier.watchdog_interval == 2.0
    notifier.watchdog_ping()
    assert fake_systemd.receive()[0] == "WATCHDOG=1"


def test_without_notify_socket_everything_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Un receptor real escucha, pero nadie le dice al notificador dónde está: no debe llegar nada.
    path = tmp_path / "notify"
    receiver = _bind(str(path))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    try:
        for notifier in (SystemdNotifier(), SystemdNotifier({"WATCHDOG_USEC": "1000000"})):
            assert not notifier.enabled
            assert notifier.watchdog_interval is None
            notifier.ready("x")
            notifier.status("y")
            notifier.reloading()
            notifier.stopping("z")
            notifier.watchdog_ping()
            notifier.extend_timeout(1)
            assert notifier.failures == 0
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            receiver.recv(4096)
    finally:
        receiver.close()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"WATCHDOG_USEC": "3000000"}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "SELF"}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "OTHER"}, None),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "garbage"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_watchdog_usec_and_pid(extra: dict[str, str], expected: float | None) -> None:
    pids = {"SELF": str(os.getpid()), "OTHER": str(os.getpid() + 1)}
    env = {"NOTIFY_SOCKET": "@videonote-dl-test-unused"}
    env.update({key: pids.get(value, value) for key, value in extra.items()})
    assert SystemdNotifier(env).watchdog_interval == expected


def test_send_errors_are_swallowed(tmp_path: Path) -> None:
    # Socket inexistente (systemd se fue): nada se propaga, solo se cuenta.
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
    assert notifier.enabled
    notifier.ready("x")
    notifier.status("y")
    notifier.watchdog_ping()
    assert notifier.failures == 3
    # Cuando el receptor aparece, el notificador se recupera solo (abre un socket nuevo).
    receiver = _bind(str(tmp_path / "missing"))
    try:
        notifier.status("y")
        assert FakeSystemd(receiver, "").receive()[0] == "STATUS=y"
        assert notifier.failures == 3
    finally:
        receiver.close()


def test_a_full_receiver_queue_does_not_hang_the_caller(tmp_path: Path) -> None:
    # Nadie lee el socket: la cola se llena y el envío debe rendirse (con un error contado) en
    # vez de bloquear para siempre el bucle de eventos.
    receiver = _bind(str(tmp_path / "notify"))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    try:
        for _ in range(100_000):
            notifier.watchdog_ping()
            if notifier.failures:
                break
        assert notifier.failures == 1
    finally:
        receiver.close()
        notifier.close()
