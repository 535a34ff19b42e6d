"""Entrada hostil contra el daemon real: cada archivo malo va a rejected/ y el daemon sigue sirviendo.

Una sola ejecución del daemon recibe todo el corpus de tests/data/bad_jobs/ y los casos que se
construyen aquí (enlace a /etc/shadow, FIFO, directorio, socket, dispositivo, enlace duro a un
archivo ajeno, 10 MB...), intercalados con trabajos buenos servidos por el servidor de pruebas.
Aparte, con ``allow_private_networks: false``, las URL a direcciones privadas son trabajos válidos
que fallan (failed/, ``private_address``) sin que llegue ni una petición al servidor.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import check_event_line
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer

CORPUS = Path(__file__).resolve().parent / "data" / "bad_jobs"
EXPECTED: dict[str, str] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
SHADOW = Path("/etc/shadow")
PWNED = Path("/tmp/videonote-bad-job-pwned")
# Lo único que puede haber en la carpeta del daemon al terminar (además de lo que crea la prueba).
ALLOWED_TOP = {"config.yaml", "spool", "out", "tmp", "log", "run", "events.jsonl", "producer", "envtmp"}


# --- ayudas --------------------------------------------------------------------------------------
def fingerprint(path: Path) -> tuple[Any, ...]:
    """Huella de un archivo que no debe cambiar: contenido (si se puede leer), tamaño, modo, dueño, mtime."""
    st = os.stat(path, follow_symlinks=False)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except PermissionError:
        digest = "unreadable"
    return digest, st.st_size, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ino


def tree(root: Path) -> set[str]:
    """Todas las rutas bajo ``root`` (sin seguir enlaces), relativas."""
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


def strays_in_slash_tmp(words: list[str]) -> list[str]:
    """Entradas de /tmp cuyo nombre lleva una palabra de esta prueba (ids, nombres de archivo)."""
    return [name for name in os.listdir("/tmp") if any(word in name for word in words)]


class Producer:
    """Un productor que deja archivos como manda el protocolo: se crean en spool/tmp/ y se renombran."""

    def __init__(self, daemon: DaemonProcess, staging: Path) -> None:
        self.daemon = daemon
        self.tmp = daemon.spool / "tmp"
        self.incoming = daemon.spool / "incoming"
        self.staging = staging  # fuera del spool: archivos "ajenos" para enlaces duros
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(parents=True, exist_ok=True)
        staging.mkdir(parents=True, exist_ok=True)

    def submit(self, name: str, make: Callable[[Path], None]) -> str:
        """``make(path)`` crea la entrada en spool/tmp/; luego rename() a incoming/ (la entrega)."""
        staged = self.tmp / f".staged-{name}"
        make(staged)
        os.rename(staged, self.incoming / name)
        return name

    def corpus(self, name: str) -> str:
        return self.submit(name, lambda p: shutil.copyfile(CORPUS / name, p))

    def symlink(self, name: str, target: str) -> str:
        return self.submit(name, lambda p: p.symlink_to(target))

    def fifo(self, name: str) -> str:
        return self.submit(name, lambda p: os.mkfifo(p))

    def directory(self, name: str) -> str:
        def make(path: Path) -> None:
            path.mkdir()
            (path / "url").write_text("https://example.org/clip.mp4\n")

        return self.submit(name, make)

    def unix_socket(self, name: str) -> str:
        def make(path: Path) -> None:
            # La ruta de un socket AF_UNIX se limita a 108 bytes: se crea con nombre relativo.
            cwd = os.getcwd()
            os.chdir(path.parent)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path.name)
            finally:
                os.chdir(cwd)
                sock.close()

        return self.submit(name, make)

    def char_device(self, name: str) -> str:
        return self.submit(name, lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 5)))

    def hard_link(self, name: str, target: Path) -> str:
        return self.submit(name, lambda p: os.link(target, p))

    def big_file(self, name: str, size: int) -> str:
        def make(path: Path) -> None:
            with open(path, "wb") as out:
                out.write(b"url: https://example.org/clip.mp4\n")
                out.write(b"#" * (size - out.tell()))

        return self.submit(name, make)

    def raw(self, name: str, data: bytes) -> str:
        return self.submit(name, lambda p: p.write_bytes(data))


def reason_of(daemon: DaemonProcess, name: str) -> str | None:
    path = daemon.spool / "rejected" / f"{name}.reason"
    return path.read_text(encoding="utf-8") if path.exists() else None


def check_daemon_event_log(daemon: DaemonProcess, vocabulary: frozenset[str]) -> list[dict[str, Any]]:
    """Cada línea del registro del daemon es un evento válido y documentado."""
    raw = daemon.event_log.read_bytes()
    assert raw.endswith(b"\n")
    return [check_event_line(line, vocabulary) for line in raw.decode("utf-8").splitlines()]


# --- la ejecución principal ----------------------------------------------------------------------
def test_bad_jobs_are_rejected_and_the_daemon_keeps_serving(
    tmp_path: Path, test_server: TestServer, event_vocabulary: frozenset[str]
) -> None:
    basetemp_before = set(os.listdir(tmp_path.parent))
    shadow_before = fingerprint(SHADOW)

    daemon = DaemonProcess(tmp_path, max_concurrent=3)
    producer = Producer(daemon, tmp_path / "producer")
    foreign = tmp_path / "producer" / "owned_by_nobody.yaml"
    foreign.write_text("url: https://example.org/clip.mp4\nid: foreign\n")
    if os.geteuid() == 0:
        os.chown(foreign, 65534, 65534)  # de otro usuario: el productor no lo posee
    foreign_before = fingerprint(foreign)

    # Trabajos buenos de tamaños distintos (uno de cada tres, con subcarpeta y nombre propios).
    good: dict[str, bytes] = {}
    for n in range(12):
        good[f"hostile-good-{n}"] = hashlib.sha256(str(n).encode()).digest() * (1 + 997 * n)
    for job_id, data in good.items():
        test_server.add(f"/{job_id}.bin", Behavior(data=data))

    # Casos malos: (nombre en incoming/, texto esperado en el motivo, cómo entregarlo).
    bad: list[tuple[str, str, Callable[[], str]]] = [
        (name, EXPECTED[name], lambda name=name: producer.corpus(name)) for name in sorted(EXPECTED)
    ]
    bad += [
        ("symlink_to_shadow.yaml", "symbolic link", lambda: producer.symlink("symlink_to_shadow.yaml", str(SHADOW))),
        ("symlink_to_dev_zero.yaml", "symbolic link",
         lambda: producer.symlink("symlink_to_dev_zero.yaml", "/dev/zero")),
        ("fifo.yaml", "FIFO", lambda: producer.fifo("fifo.yaml")),
        ("directory.yaml", "directory", lambda: producer.directory("directory.yaml")),
        ("socket.yaml", "socket", lambda: producer.unix_socket("socket.yaml")),
        ("hard_link_foreign.yaml", "other hard links", lambda: producer.hard_link("hard_link_foreign.yaml", foreign)),
        ("ten_mb.yaml", "the limit is 65536 bytes", lambda: producer.big_file("ten_mb.yaml", 10 * 1024 * 1024)),
        ("too_big.json", "the limit is 65536 bytes", lambda: producer.big_file("too_big.json", 64 * 1024 + 1)),
        # Nombres con caracteres de control: llegan a los eventos (el JSON los escapa) y al .reason.
        ("evil\nname.yaml", "unknown key(s) urll", lambda: producer.raw("evil\nname.yaml", b"urll: x\n")),
        ("esc\x1b[31mred.yaml", "unknown key(s) urll", lambda: producer.raw("esc\x1b[31mred.yaml", b"urll: x\n")),
    ]
    if os.geteuid() == 0:
        bad.append(("char_device.yaml", "device", lambda: producer.char_device("char_device.yaml")))
    assert len(bad) >= 50

    published_as: dict[str, str] = {}

    def drop_good(job_id: str) -> None:
        job: dict[str, Any] = {"url": test_server.url(f"/{job_id}.bin"), "id": job_id}
        if len(published_as) % 3 == 2:  # uno de cada tres, con subcarpeta y nombre propios
            job.update(output_dir="cats/2026", filename=f"{job_id}.data")
            published_as[job_id] = f"cats/2026/{job_id}.data"
        else:
            published_as[job_id] = f"{job_id}.bin"
        daemon.drop_job(job)

    # TMPDIR propio: el daemon sólo debe usar las carpetas configuradas, nunca la temporal del sistema.
    envtmp = tmp_path / "envtmp"
    envtmp.mkdir()
    daemon.start(env={"TMPDIR": str(envtmp)})
    try:
        # Intercalados: un trabajo bueno cada 9 malos; los que sobren, al final.
        good_ids = iter(good)
        for index, (_name, _expected, deliver) in enumerate(bad):
            deliver()
            if index % 9 == 0 and (job_id := next(good_ids, None)) is not None:
                drop_good(job_id)
        for job_id in good_ids:
            drop_good(job_id)

        for job_id, data in good.items():
            folder, record = daemon.wait_record(job_id, 120)
            assert folder == "done", record
            assert record["path"] == str(daemon.output / published_as[job_id])
            assert Path(record["path"]).read_bytes() == data
            assert record["sha256"] == hashlib.sha256(data).hexdigest()

        names = [name for name, _expected, _deliver in bad]
        wait_until(lambda: all(reason_of(daemon, n) is not None for n in names), 60,
                   what="a .reason file for every bad job")
        assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon died"

        rejected_events = {e["file"]: e for e in daemon.events(name="job.rejected")}
        for name, expected, _deliver in bad:
            assert os.path.lexists(daemon.spool / "rejected" / name), f"{name!r} is not in rejected/"
            reason = reason_of(daemon, name)
            assert reason is not None and expected in reason, f"{name!r}: {reason!r} lacks {expected!r}"
            event = rejected_events.get(name)
            assert event is not None, f"no job.rejected event for {name!r}"
            assert expected in event["reason"] and event["level"] == "warning"
            assert event["reason"].isprintable(), f"reason with control characters: {event['reason']!r}"
        assert len(daemon.events(name="job.rejected")) == len(bad)

        # Nada quedó a medias: incoming/ y active/ vacíos, sin directorios temporales.
        wait_until(lambda: not daemon.temp_dirs(), 30, what="temp dirs removed")
        assert os.listdir(daemon.spool / "incoming") == []
        assert daemon.active_files() == []
        assert daemon.proc.poll() is None, "the daemon died"
        assert daemon.stop() == 0
    finally:
        daemon.__exit__(None, None, None)

    # El daemon nunca falló por dentro ni escribió trazas.
    events = check_daemon_event_log(daemon, event_vocabulary)
    assert [e for e in events if e["event"] == "daemon.error"] == []
    assert "Traceback" not in daemon.stderr_path.read_text(errors="replace")

    # Sólo salió en out/ lo de los trabajos buenos.
    published = {p.relative_to(daemon.output).as_posix() for p in daemon.output.rglob("*") if not p.is_dir()}
    assert published == set(published_as.values())
    assert {p.relative_to(daemon.output).as_posix() for p in daemon.output.rglob("*") if p.is_dir()} == {
        "cats", "cats/2026"}

    # Nada fuera de las carpetas configuradas: ni en la de la prueba, ni al lado, ni en /tmp.
    top = set(os.listdir(tmp_path))
    assert {t for t in top if not t.startswith("stderr.")} <= ALLOWED_TOP, top
    assert set(os.listdir(tmp_path.parent)) == basetemp_before
    assert os.listdir(envtmp) == []
    words = [*good, *(Path(name).stem for name in EXPECTED if len(Path(name).stem) > 6), "videonote-bad-job"]
    assert strays_in_slash_tmp(words) == []
    assert not PWNED.exists()
    assert set(os.listdir(daemon.spool)) == {"tmp", "incoming", "active", "done", "failed", "rejected", "cancel"}
    assert os.listdir(daemon.spool / "failed") == []
    assert sorted(os.listdir(daemon.spool / "done")) == sorted(f"{job_id}.json" for job_id in good)
    assert os.listdir(daemon.spool / "tmp") == []

    # Los destinos de enlaces y el archivo ajeno siguen intactos.
    assert fingerprint(SHADOW) == shadow_before
    assert os.path.islink(daemon.spool / "rejected" / "symlink_to_shadow.yaml")
    assert fingerprint(foreign)[:6] == foreign_before[:6]  # mismo contenido, dueño y modo


def test_duplicate_live_id_is_rejected(tmp_path: Path, test_server: TestServer) -> None:
    gate = threading.Event()

    def held(_handler: Any, _hit: int) -> bool:
        gate.wait(60)  # el primer trabajo sigue vivo hasta que la prueba lo suelte
        return False

    slow_data = os.urandom(200_000)
    slow = test_server.add("/slow.bin", Behavior(data=slow_data, handler=held))
    other = test_server.add("/other.bin", Behavior(data=b"other"))
    with DaemonProcess(tmp_path) as daemon:
        daemon.drop_job({"url": slow, "id": "dup-live"}, name="dup-live-first.yaml")
        wait_until(lambda: test_server.requests_for("/slow.bin"), 30, what="the first job's request")
        daemon.drop_job({"url": other, "id": "dup-live"}, name="dup-live-second.yaml")
        wait_until(lambda: reason_of(daemon, "dup-live-second.yaml"), 30, what="the second file rejected")
        reason = reason_of(daemon, "dup-live-second.yaml")
        assert reason is not None and "already queued or running" in reason and "choose another id" in reason
        events = daemon.events("dup-live", "job.rejected")
        assert len(events) == 1 and events[0]["file"] == "dup-live-second.yaml"
        assert test_server.requests_for("/other.bin") == []

        gate.set()
        folder, record = daemon.wait_record("dup-live")
        assert folder == "done" and record["job"]["url"] == slow
        assert Path(record["path"]).read_bytes() == slow_data

        # Con el trabajo terminado, el mismo id explícito tampoco se acepta: el registro no se pisa.
        before = (daemon.spool / "done" / "dup-live.json").read_bytes()
        daemon.drop_job({"url": other, "id": "dup-live"}, name="dup-live-third.yaml")
        wait_until(lambda: reason_of(daemon, "dup-live-third.yaml"), 30, what="the third file rejected")
        assert "already finished" in (reason_of(daemon, "dup-live-third.yaml") or "")
        assert (daemon.spool / "done" / "dup-live.json").read_bytes() == before
        assert daemon.proc is not None and daemon.proc.poll() is None


def test_private_addresses_fail_without_a_request(tmp_path: Path, test_server: TestServer) -> None:
    """Con ``allow_private_networks: false`` (el valor por defecto) son trabajos válidos que fallan."""
    test_server.add("/secret.bin", Behavior(data=b"internal secret"))
    port = test_server.port
    targets = {
        "loopback": f"http://127.0.0.1:{port}/secret.bin",
        "localhost": f"http://localhost:{port}/secret.bin",
        "ipv6-loopback": f"http://[::1]:{port}/secret.bin",
        "ipv4-mapped": f"http://[::ffff:127.0.0.1]:{port}/secret.bin",
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "unspecified": f"http://0.0.0.0:{port}/secret.bin",
        "private-10": "http://10.0.0.1/secret.bin",
    }
    with DaemonProcess(tmp_path, download={"allow_private_networks": False}) as daemon:
        for name, url in targets.items():
            daemon.drop_job({"url": url, "id": f"priv-{name}", "retries": 3})
        # También por yt-dlp: el mismo rechazo, antes de arrancar nada.
        daemon.drop_job({"url": targets["loopback"], "id": "priv-ytdlp", "downloader": "ytdlp", "retries": 3})
        for job_id in [f"priv-{name}" for name in targets] + ["priv-ytdlp"]:
            folder, record = daemon.wait_record(job_id, 90)
            assert folder == "failed", (job_id, record)
            assert record["error"]["kind"] == "private_address", (job_id, record["error"])
            assert "allow_private_networks" in record["error"]["message"]
            assert record["attempts"] == 1, "a refused address is not retried"
        assert daemon.rejected() == []
        wait_until(lambda: not daemon.temp_dirs(), 30, what="temp dirs removed")
        assert daemon.proc is not None and daemon.proc.poll() is None
    assert test_server.requests == [], "a request reached the loopback server"
    assert not any(daemon.output.rglob("*"))


def test_non_utf8_file_name_is_rejected_with_reason(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path) as daemon:
        raw_name = b"bad-\xff-name.yaml"
        staged = os.fsencode(daemon.spool / "tmp") + b"/.staged"
        with open(staged, "wb") as out:
            out.write(b"urll: x\n")
        os.rename(staged, os.fsencode(daemon.spool / "incoming") + b"/" + raw_name)
        rejected = os.fsencode(daemon.spool / "rejected")
        wait_until(lambda: raw_name in os.listdir(rejected), 30, what="the file moved to rejected/")
        wait_until(lambda: daemon.count_events("job.rejected") or daemon.count_events("daemon.error"), 30)
        assert daemon.count_events("daemon.error") == 0, daemon.stderr_text()
        assert raw_name + b".reason" in os.listdir(rejected)


def test_control_characters_in_file_names_never_reach_stderr_raw(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path) as daemon:
        name = "esc\x1b[2J\rcr.yaml"
        daemon.drop_job(b"urll: x\n", name=name)
        wait_until(lambda: reason_of(daemon, name), 30, what="the file rejected")
        assert daemon.stop() == 0
        # En bytes: read_text() convertiría el \r en \n.
        reason = (daemon.spool / "rejected" / f"{name}.reason").read_bytes()
        stderr = daemon.stderr_path.read_bytes()
    assert b"job.rejected" in stderr
    assert b"\x1b" not in stderr and b"\r" not in stderr, stderr
    assert b"\x1b" not in reason and b"\r" not in reason, reason
