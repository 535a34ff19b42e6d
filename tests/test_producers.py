"""Productores que no se fían unos de otros (issue 12) y topes de la configuración (issue 14).

El daemon real (subproceso, root) y el servidor HTTP real en 127.0.0.1; dos productores reales,
alice (uid 2001) y bob (uid 2002), que actúan con ``setpriv`` (otro uid de verdad: el dueño de los
archivos que dejan es el suyo). Se comprueba: quién envió y quién canceló queda en registros y
eventos; bob no cancela lo de alice (ni por adelantado); la prioridad alta exige el grupo admin; la
copia rechazada es 0600 y sin valores de cabeceras; los tokens de la URL no llegan a registros ni
eventos; ``submit --wait`` sigue su propio trabajo; ``cancel`` de un id desconocido sale con 3.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer

ALICE, BOB = 2001, 2002
PRODUCERS = 2100  # el grupo de productores en la prueba del CLI

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="acts as other users with setpriv (needs root)"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed"),
]


def open_spool(daemon: DaemonProcess) -> None:
    """Como el maildrop: tmp/, incoming/ y cancel/ escribibles y atravesables, no listables, sticky."""
    for folder in [daemon.spool, *daemon.spool.parents]:  # los productores atraviesan hasta el spool
        if folder == Path("/"):
            break
        folder.chmod(folder.stat().st_mode | 0o011)
    daemon.spool.chmod(0o755)
    for name in ("tmp", "incoming", "cancel"):
        (daemon.spool / name).chmod(0o1733)


def as_user(uid: int, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sh", "-c", script],
                          capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"], **env})
    assert done.returncode == 0, done.stderr
    return done


def drop_as(daemon: DaemonProcess, uid: int, job: dict[str, object], name: str | None = None) -> None:
    """El protocolo a mano, como ese usuario: escribir en tmp/ y renombrar a incoming/."""
    name = name or f"{job['id']}.{os.urandom(8).hex()}.yaml"
    as_user(uid, 'umask 077; printf %s "$JOB" > "$S/tmp/.$N" && mv "$S/tmp/.$N" "$S/incoming/$N"',
            JOB=yaml.safe_dump(job), S=str(daemon.spool), N=name)


def cancel_as(daemon: DaemonProcess, uid: int, job_id: str) -> None:
    as_user(uid, 'touch "$S/cancel/$I"', S=str(daemon.spool), I=job_id)


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args, "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=60)


def test_identity_authority_and_secrets_between_two_producers(tmp_path: Path, test_server: TestServer) -> None:
    hold = threading.Event()
    test_server.add("/held.bin", Behavior(data=b"h" * 256 * 1024, hold=hold, hold_after=64 * 1024))
    quick = test_server.add("/quick.bin", data=b"q" * 1000)
    try:
        with DaemonProcess(tmp_path) as daemon:
            open_spool(daemon)
            # Quién envió: el dueño del archivo.
            drop_as(daemon, ALICE, {"id": "alice-run", "url": test_server.url("/held.bin")})
            wait_until(lambda: daemon.events("alice-run", "job.started"), 30, what="alice-run started")
            assert daemon.events("alice-run", "job.received")[0]["submitter"] == ALICE
            # bob no puede cancelarlo: evento de rechazo, el marcador se retira, el trabajo sigue.
            cancel_as(daemon, BOB, "alice-run")
            refused = wait_until(lambda: daemon.events("alice-run", "job.cancel_refused"), 15, what="refusal")
            assert (refused[0]["cancelled_by"], refused[0]["submitter"]) == (BOB, ALICE)
            wait_until(lambda: not (daemon.spool / "cancel" / "alice-run").exists(), 10, what="marker removed")
            assert daemon.record("alice-run") is None
            # Su dueña sí.
            cancel_as(daemon, ALICE, "alice-run")
            folder, record = daemon.wait_record("alice-run", 30)
            assert (folder, record["outcome"]) == ("failed", "cancelled")
            assert (record["submitter"], record["cancelled_by"]) == (ALICE, ALICE)
            # Un cancel adelantado de bob no vale para el trabajo de alice; el de alice sí.
            cancel_as(daemon, BOB, "alice-early")
            cancel_as(daemon, ALICE, "alice-own-early")
            drop_as(daemon, ALICE, {"id": "alice-early", "url": quick})
            drop_as(daemon, ALICE, {"id": "alice-own-early", "url": quick})
            assert daemon.wait_record("alice-early", 30)[0] == "done"
            folder, record = daemon.wait_record("alice-own-early", 30)
            assert (record["outcome"], record["cancelled_by"], "attempts" in record) == ("cancelled", ALICE, False)
            # root (administrador) cancela lo de cualquiera.
            drop_as(daemon, BOB, {"id": "bob-run", "url": test_server.url("/held.bin")})
            wait_until(lambda: daemon.events("bob-run", "job.started"), 30, what="bob-run started")
            (daemon.spool / "cancel" / "bob-run").touch()
            folder, record = daemon.wait_record("bob-run", 30)
            assert (record["outcome"], record["submitter"], record["cancelled_by"]) == ("cancelled", BOB, 0)
            shown = cli(daemon, "show", "bob-run")
            assert "submitter: uid 2002" in shown.stdout and "cancelled by: root (uid 0)" in shown.stdout, shown.stdout
            # Prioridad por encima del techo: sólo el grupo admin (root lo es).
            drop_as(daemon, ALICE, {"id": "alice-urgent", "url": quick, "priority": 500})
            drop_as(daemon, 0, {"id": "root-urgent", "url": quick, "priority": 500})
            assert daemon.wait_record("root-urgent", 30)[0] == "done"
            wait_until(lambda: daemon.events("alice-urgent", "job.rejected"), 15, what="alice-urgent rejected")
            assert "priority 500 is above 100" in daemon.events("alice-urgent", "job.rejected")[0]["reason"]
            # La copia rechazada: 0600, del daemon, sin el valor de la cabecera; el motivo se lee.
            drop_as(daemon, ALICE, {"id": "alice-bad", "url": quick, "colour": "red",
                                    "headers": {"Authorization": "Bearer SECRET-HEADER"}}, name="alice-bad.yaml")
            wait_until(lambda: (daemon.spool / "rejected" / "alice-bad.yaml.reason").exists(), 15, what="rejection")
            copy = daemon.spool / "rejected" / "alice-bad.yaml"
            st = copy.stat()
            assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, os.geteuid())
            assert b"SECRET-HEADER" not in copy.read_bytes() and b"Authorization" in copy.read_bytes()
            assert "colour" in (daemon.spool / "rejected" / "alice-bad.yaml.reason").read_text()
            # Tokens en la consulta: nunca en registros ni eventos.
            drop_as(daemon, ALICE, {"id": "alice-token", "url": quick + "?token=SECRET-TOKEN&part=1"})
            folder, record = daemon.wait_record("alice-token", 30)
            assert folder == "done" and record["job"]["url"].endswith("?token=***&part=1"), record["job"]
            assert b"SECRET-TOKEN" not in daemon.event_log.read_bytes()
            assert b"SECRET-TOKEN" not in (daemon.spool / "done" / "alice-token.json").read_bytes()
            assert b"SECRET-HEADER" not in daemon.event_log.read_bytes()
    finally:
        hold.set()


def test_submit_wait_follows_its_own_job_and_cancel_of_an_unknown_id(tmp_path: Path,
                                                                     test_server: TestServer) -> None:
    hold = threading.Event()
    test_server.add("/bob.bin", Behavior(data=b"b" * 256 * 1024, hold=hold, hold_after=64 * 1024))
    quick = test_server.add("/mine.bin", data=b"m" * 1000)
    try:
        with DaemonProcess(tmp_path, producers={"cancel_ttl": "2s"}) as daemon:
            open_spool(daemon)
            drop_as(daemon, BOB, {"id": "report-q3", "url": test_server.url("/bob.bin")})
            wait_until(lambda: daemon.events("report-q3", "job.started"), 30, what="bob's report-q3 started")
            # alice envía el mismo id y espera: el daemon rechaza el duplicado; nunca ve lo de bob.
            squat = cli(daemon, "submit", quick, "--id", "report-q3", "--wait", "--timeout", "30")
            assert squat.returncode == 1, (squat.stdout, squat.stderr)
            assert "rejected:" in squat.stdout and "already queued or running" in squat.stdout, squat.stdout
            assert "done:" not in squat.stdout
            hold.set()
            assert daemon.wait_record("report-q3", 30)[0] == "done"
            again = cli(daemon, "submit", quick, "--id", "report-q3", "--wait")
            assert again.returncode == 2 and "already finished" in again.stderr
            # El archivo que deja submit tiene un nombre imposible de adivinar.
            mine = cli(daemon, "submit", quick, "--id", "mine", "--wait", "--timeout", "30")
            assert mine.returncode == 0 and "done:" in mine.stdout, (mine.stdout, mine.stderr)
            received = daemon.events("mine", "job.received")[0]
            assert re.fullmatch(r"mine\.[0-9a-f]{32}\.yaml", received["file"]), received
            # Cancelar un id que nadie tiene: lo dice y sale con 3; el marcador caduca con su evento.
            nosuch = cli(daemon, "cancel", "nosuch")
            assert nosuch.returncode == 3, (nosuch.stdout, nosuch.stderr)
            assert "no live or queued job nosuch" in nosuch.stderr
            expired = wait_until(lambda: daemon.events("nosuch", "job.cancel_expired"), 15, what="marker expiry")
            assert expired[0]["cancelled_by"] == 0
            assert not (daemon.spool / "cancel" / "nosuch").exists()
    finally:
        hold.set()


def test_config_timeout_and_retries_are_maxima(tmp_path: Path, test_server: TestServer) -> None:
    failing = test_server.add("/failing.bin", Behavior(data=b"x" * 100, fail_statuses=[500] * 20))
    test_server.add("/stalled.bin", Behavior(data=b"s" * 1000, stall=20))
    with DaemonProcess(tmp_path, download={"retries": 1, "timeout": "1s", "backoff": "10ms"}) as daemon:
        daemon.drop_job({"id": "many-retries", "url": failing, "retries": 50})
        daemon.drop_job({"id": "long-timeout", "url": test_server.url("/stalled.bin"), "timeout": "1h",
                         "retries": 0})
        folder, record = daemon.wait_record("many-retries", 30)
        assert (folder, record["attempts"]) == ("failed", 2), record  # 1 intento + 1 reintento, no 51
        folder, record = daemon.wait_record("long-timeout", 15)  # el 1s del config, no la hora del trabajo
        assert folder == "failed" and record["timings"]["duration_s"] < 10, record


def test_producer_cli_submit_and_cancel_in_a_maildrop_spool(tmp_path: Path, test_server: TestServer) -> None:
    """``submit`` y ``cancel`` como un productor (sin el grupo del daemon) en el spool maildrop.

    incoming/ no es listable: su fsync no se puede abrir, así que la entrega se hace durable con
    syncfs (antes salía con 4, "cannot read incoming", con el trabajo ya entregado: reintentarlo
    lo duplicaba). El estado (status.json) no es legible para él: ``cancel`` espera sólo el
    registro (antes salía con 4 con el marcador ya puesto)."""
    quick = test_server.add("/cli.bin", data=b"c" * 2000)
    hold = threading.Event()
    held = test_server.add("/cli-held.bin", Behavior(data=b"h" * 256 * 1024, hold=hold, hold_after=64 * 1024))
    repo = Path(__file__).resolve().parents[1]

    def alice(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["setpriv", f"--reuid={ALICE}", f"--regid={ALICE}", f"--groups={PRODUCERS}", sys.executable, "-m", "daemon",
             *args, "--config", str(daemon.config_path)], capture_output=True, text=True, timeout=60, cwd=repo)

    daemon = DaemonProcess(tmp_path, producers={"cancel_ttl": "1s"})
    previous = os.umask(0o027)  # como UMask= de la unidad: el estado no es legible para otros
    try:
        daemon.start()
    finally:
        os.umask(previous)
    try:
        open_spool(daemon)
        # Como systemd/videonote-dl.tmpfiles: registros legibles por el grupo de productores (setgid).
        # (Los registros se escriben en tmp/ y se enlazan en done/: su grupo es el de tmp/.)
        for folder, mode in (("tmp", 0o3733), ("done", 0o2750), ("failed", 0o2750), ("rejected", 0o2710)):
            os.chown(daemon.spool / folder, -1, PRODUCERS)
            (daemon.spool / folder).chmod(mode)
        # alice no lee el estado (root:root, sin permiso para otros; la prueba lo necesita así).
        wait_until(lambda: daemon.status_file.exists(), 10, what="status file")
        assert daemon.status_file.stat().st_uid != ALICE and not daemon.status_file.stat().st_mode & 0o004
        done = alice("submit", quick, "--id", "alice-cli", "--wait", "--timeout", "30")
        assert done.returncode == 0 and "done:" in done.stdout, (done.stdout, done.stderr)
        assert len(daemon.events("alice-cli", "job.received")) == 1  # entregado una sola vez
        folder, record = daemon.wait_record("alice-cli", 30)
        assert (folder, record["submitter"]) == ("done", ALICE)
        assert alice("submit", held, "--id", "alice-held").returncode == 0
        wait_until(lambda: daemon.events("alice-held", "job.started"), 30, what="alice-held started")
        cancelled = alice("cancel", "alice-held", "--timeout", "30")
        assert cancelled.returncode == 0 and "cancelled alice-held" in cancelled.stdout, (
            cancelled.stdout, cancelled.stderr)
        folder, record = daemon.wait_record("alice-held", 30)
        assert (record["outcome"], record["cancelled_by"]) == ("cancelled", ALICE)
        # Un id que nadie tiene: sin el estado, la caducidad del marcador (cancel_ttl) dice que no había
        # trabajo; no es un rechazo (antes salía con 4, "refused").
        unknown = alice("cancel", "alice-nosuch", "--timeout", "10")
        assert unknown.returncode == 3 and "expired" in unknown.stderr, (unknown.stdout, unknown.stderr)
        assert daemon.events("alice-nosuch", "job.cancel_expired")
    finally:
        hold.set()
        daemon.__exit__(None, None, None)
