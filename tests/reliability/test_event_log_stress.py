"""El registro de eventos bajo carga, con una reapertura (SIGHUP, logrotate) a mitad.

8 procesos × 4 hilos escriben eventos de ~5 KB (más que PIPE_BUF) en el mismo archivo con
``configure_events`` + ``get_logger``. Cuando todos han escrito su primera tanda, la prueba
renombra el archivo (como logrotate) y manda SIGHUP a cada proceso, cuyo manejador llama a
``reopen_event_log()``; los hilos siguen escribiendo durante la reapertura y después.

Al final, entre el archivo viejo y el nuevo: tantas líneas como eventos emitidos, ninguna que
no sea JSON, ningún evento repetido ni perdido; lo escrito antes del renombrado está en el viejo y
lo escrito tras la reapertura, en el nuevo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

PROCESSES, THREADS, BEFORE, AFTER, SIZE = 8, 4, 100, 100, 5000

_WRITER = r"""
import json, signal, sys, threading
from pathlib import Path
from daemon.events import configure_events, get_logger, reopen_event_log

path = Path(sys.argv[1])
proc, threads, before, after, size = (int(a) for a in sys.argv[2:7])
configure_events(path, stderr=False)
log = get_logger()
reopened = threading.Event()


def on_hup(_signum, _frame):
    # Como el daemon con SIGHUP: logrotate movió el archivo, se abre uno nuevo con el mismo nombre.
    reopen_event_log()
    reopened.set()


signal.signal(signal.SIGHUP, on_hup)
halfway = threading.Barrier(threads + 1)
emitted = [0] * threads
during = [0] * threads


def emit(t, phase, seq):
    log.info("job.progress", correlation_id=f"p{proc}-t{t}", phase=phase, seq=seq,
             pad=chr(97 + seq % 26) * size)
    emitted[t] += 1


def work(t):
    for seq in range(before):
        emit(t, "before", seq)
    halfway.wait()
    # Mientras llega la señal: primero a toda velocidad, luego con pausas (acotado: 100 + 1000).
    seq = 0
    while not reopened.is_set() and seq < 100:
        emit(t, "during", seq)
        seq += 1
    while not reopened.wait(0.01) and seq < 1100:
        emit(t, "during", seq)
        seq += 1
    during[t] = seq
    for seq in range(after):
        emit(t, "after", seq)


workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for w in workers:
    w.start()
halfway.wait()
print("halfway", flush=True)
# El hilo principal no escribe eventos: espera con join acotado para que el manejador de la
# señal corra aquí sin tener tomado el cerrojo del registro.
for w in workers:
    while w.is_alive():
        w.join(0.05)
print(json.dumps({"emitted": sum(emitted), "during": sum(during), "reopened": reopened.is_set()}), flush=True)
"""


def _read(path: Path) -> list[dict[str, object]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), f"{path} ends in a partial line"
    events = []
    for number, line in enumerate(raw.split(b"\n")[:-1], 1):
        try:
            events.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"{path}:{number} is not JSON ({len(line)} bytes): {line[:100]!r}") from None
    return events


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_processes_and_threads_with_a_sighup_reopen_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "events.stress.jsonl"
    rotated = tmp_path / "events.stress.jsonl.1"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(p), str(THREADS), str(BEFORE), str(AFTER), str(SIZE)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for p in range(PROCESSES)
    ]
    try:
        for writer in writers:
            assert writer.stdout is not None
            line = writer.stdout.readline()
            assert line.strip() == "halfway", (line, writer.stderr.read() if writer.stderr else "")
        # Todos escribieron su primera tanda y siguen escribiendo: logrotate mueve y avisa.
        os.rename(path, rotated)
        for writer in writers:
            os.kill(writer.pid, signal.SIGHUP)
        results = []
        for writer in writers:
            out, err = writer.communicate(timeout=180)
            assert writer.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait(10)
    assert all(r["reopened"] for r in results), results
    emitted = sum(int(r["emitted"]) for r in results)
    assert emitted == PROCESSES * THREADS * (BEFORE + AFTER) + sum(int(r["during"]) for r in results)

    old, new = _read(rotated), _read(path)
    assert len(old) + len(new) == emitted
    seen: set[tuple[object, object, object]] = set()
    for event in old + new:
        assert event["event"] == "job.progress"
        assert event["pad"] == chr(97 + int(str(event["seq"])) % 26) * SIZE, "a line was torn or mixed"
        seen.add((event["correlation_id"], event["phase"], event["seq"]))
    assert len(seen) == emitted, "an event was written twice"
    # Antes del renombrado, todo en el viejo; tras la reapertura, todo en el nuevo, de cada hilo.
    assert all(e["phase"] != "after" for e in old)
    assert all(e["phase"] != "before" for e in new)
    per_thread_after = {e["correlation_id"] for e in new if e["phase"] == "after"}
    assert per_thread_after == {f"p{p}-t{t}" for p in range(PROCESSES) for t in range(THREADS)}
    assert sum(1 for e in new if e["phase"] == "after") == PROCESSES * THREADS * AFTER
