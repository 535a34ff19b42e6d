"""Notificaciones a systemd (protocolo sd_notify) sin biblioteca C.

systemd pasa al servicio la dirección de su socket de notificación en ``NOTIFY_SOCKET``: una ruta
(``/run/systemd/notify``) o un nombre abstracto que empieza por ``@``. Cada notificación es un
datagrama AF_UNIX/SOCK_DGRAM con líneas ``CLAVE=valor`` separadas por ``\\n``; el núcleo adjunta las
credenciales del emisor, y con ``NotifyAccess=main`` systemd solo acepta las del proceso principal.

El perro guardián (``WatchdogSec=``) llega como ``WATCHDOG_USEC`` (y ``WATCHDOG_PID``, el PID al que
va dirigido): el servicio debe enviar ``WATCHDOG=1`` antes de que venza ese plazo; lo habitual, y lo
que expone ``watchdog_interval``, es la mitad.

Fuera de systemd (sin ``NOTIFY_SOCKET``) todos los métodos son no-ops. Un fallo al enviar nunca
hace caer al daemon: se descarta en silencio (como hace ``sd_notify(3)``, que solo devuelve un
error que casi nadie mira).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

__all__ = ["SystemdNotifier", "parse_notify_address"]

# Tiempo máximo que un envío puede bloquear (cola del receptor llena): el bucle de eventos
# no debe quedarse colgado por culpa de un systemd ocupado.
_SEND_TIMEOUT = 1.0


def parse_notify_address(value: str | None) -> str | bytes | None:
    """Convierte el valor de ``NOTIFY_SOCKET`` en una dirección para ``sendto``.

    ``/ruta`` -> la ruta; ``@nombre`` -> ``b"\\0nombre"`` (espacio de nombres abstracto de Linux).
    Cualquier otra cosa (vacío, relativa, ``vsock:`` de systemd >= 253) -> ``None``: sin soporte.
    """
    if not value:
        return None
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode("utf-8", "surrogateescape")
    return None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Intervalo de ``WATCHDOG=1`` en segundos (la mitad del plazo), o ``None`` si no hay watchdog.

    Igual que ``sd_watchdog_enabled(3)``: ``WATCHDOG_USEC`` debe ser un entero positivo y, si
    ``WATCHDOG_PID`` está presente, debe ser el PID de este proceso (si no, el watchdog es de otro).
    """
    raw_usec = environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = environ.get("WATCHDOG_PID")
    if raw_pid is not None and raw_pid != "":
        try:
            if int(raw_pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2e6


def _monotonic_usec() -> int:
    """CLOCK_MONOTONIC en microsegundos, el reloj que systemd espera en ``MONOTONIC_USEC=``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str) -> str:
    """Un valor del protocolo no puede contener saltos de línea: los cambia por espacios."""
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


class SystemdNotifier:
    """Cliente mínimo de ``sd_notify``: READY, STATUS, RELOADING, STOPPING y WATCHDOG.

    Es seguro llamarlo desde varios hilos. ``enabled`` es ``False`` fuera de systemd y entonces
    cada método no hace nada. ``watchdog_interval`` (segundos) es la mitad de ``WATCHDOG_USEC``
    cuando el watchdog está activo para este PID y hay a dónde enviar los pings; si no, ``None``.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = parse_notify_address(env.get("NOTIFY_SOCKET"))
        self.enabled: bool = self.address is not None
        self.watchdog_interval: float | None = _watchdog_interval(env) if self.enabled else None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._last_status: str | None = None
        # Cuántos envíos fallaron (para diagnóstico y pruebas); nunca se lanza la excepción.
        self.failures = 0

    # -- mensajes del protocolo ------------------------------------------------------------

    def ready(self, status: str | None = None) -> None:
        """``READY=1``: arranque (o recarga) terminado. Incluye ``MAINPID=`` y el ``STATUS=`` dado."""
        if not self.enabled:
            return
        lines = ["READY=1", f"MAINPID={os.getpid()}"]
        if status is not None:
            status = _one_line(status)
            lines.append(f"STATUS={status}")
        if self._send(lines) and status is not None:
            self._last_status = status

    def status(self, text: str) -> None:
        """``STATUS=texto`` (lo que muestran ``systemctl status`` y ``StatusText``); solo si cambió."""
        if not self.enabled:
            return
        text = _one_line(text)
        if text == self._last_status:
            return
        if self._send([f"STATUS={text}"], wait=False):
            self._last_status = text

    def reloading(self) -> None:
        """``RELOADING=1`` con ``MONOTONIC_USEC=``; al terminar la recarga hay que llamar a ``ready()``."""
        if not self.enabled:
            return
        self._send(["RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}"])

    def stopping(self, status: str | None = None) -> None:
        """``STOPPING=1``: el servicio empezó a pararse (con un ``STATUS=`` opcional)."""
        if not self.enabled:
            return
        lines = ["STOPPING=1"]
        if status is not None:
            status = _one_line(status)
            lines.append(f"STATUS={status}")
        if self._send(lines) and status is not None:
            self._last_status = status

    def watchdog_ping(self) -> None:
        """``WATCHDOG=1``: el bucle de eventos sigue vivo. Debe llamarse desde ese mismo bucle."""
        if not self.enabled:
            return
        self._send(["WATCHDOG=1"], wait=False)

    def extend_timeout(self, seconds: float) -> None:
        """``EXTEND_TIMEOUT_USEC=``: pide más plazo para arrancar o pararse (opcional)."""
        if not self.enabled:
            return
        self._send([f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}"])

    def close(self) -> None:
        """Cierra el socket (se vuelve a abrir solo si hay otro envío)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    # -- transporte ---------------------------------------------------------------------------

    def _send(self, lines: list[str], wait: bool = True) -> bool:
        """Envía un datagrama; ``True`` si salió. Los errores se cuentan y se tragan.

        Con ``wait=False`` (STATUS, WATCHDOG: se repiten solos) un receptor que no lee no frena
        el bucle ni un instante: el mensaje se pierde. READY, RELOADING y STOPPING esperan hasta
        ``_SEND_TIMEOUT``."""
        address = self.address
        if address is None:
            return False
        data = "\n".join(lines).encode("utf-8", "surrogateescape")
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    sock.settimeout(_SEND_TIMEOUT)
                    self._sock = sock
                self._sock.sendto(data, 0 if wait else socket.MSG_DONTWAIT, address)
                return True
            except OSError:
                # systemd reiniciado, socket borrado, cola llena...: el daemon sigue igual.
                self.failures += 1
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                return False

    def __repr__(self) -> str:
        return (
            f"SystemdNotifier(enabled={self.enabled}, address={self.address!r}, "
            f"watchdog_interval={self.watchdog_interval})"
        )
