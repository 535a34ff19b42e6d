"""Reparto justo dentro de un daemon y orden de reclamo: el gestor real, el servidor HTTP real.

- A igual prioridad, los huecos van por turnos entre remitentes (``owner``), aunque uno haya
  dejado muchos más trabajos y antes.
- ``max_running_per_owner`` limita lo que un remitente corre a la vez sin frenar a los demás.
- La prioridad sigue mandando sobre los turnos.
- ``ClaimOrder`` lee la prioridad de los archivos de incoming/ sin reclamarlos, una vez por versión.
- ``fs_kind`` lee el número mágico real de ``statfs``; ``watch: auto`` elige inotify en disco local.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
from pathlib import Path

from daemon.claim_order import ClaimOrder, peek_priority
from daemon.downloaders import DownloadOptions
from daemon.downloaders.download_manager import DownloadManager, DownloadTask
from daemon.downloaders.http_downloader import HttpDownloader
from daemon.fs_kind import NETWORK_FILESYSTEMS, choose_watch, fs_kind
from daemon.spool import Spool
from tests.support.http_server import Behavior, TestServer

ALICE, BOB, CAROL = 1001, 1002, 1003


def _run_jobs(tmp_path: Path, server: TestServer, jobs: list[tuple[str, int | None, int]],
              max_concurrent: int = 1, cap: int = 0) -> list[DownloadTask]:
    """Encola ``jobs`` (id, remitente, prioridad) en un gestor real y devuelve las tareas por orden de inicio."""
    started: list[DownloadTask] = []

    async def main() -> None:
        downloader = HttpDownloader(fsync=False)
        manager = DownloadManager({"http": downloader}, tmp_path / "out", max_concurrent=max_concurrent,
                                  temp_root=tmp_path / "tmp", fsync=False, max_running_per_owner=cap)
        running_by_owner: dict[int | None, int] = {}
        peak: dict[int | None, int] = {}

        def finished(task: DownloadTask) -> None:
            running_by_owner[task.owner] -= 1

        manager.on_finished = finished
        # Todo se encola antes de que nada empiece: el orden de llegada es el de la lista.
        manager.max_concurrent = 0
        tasks = [manager.submit(job_id, DownloadOptions(url=server.url(f"/fair/{job_id}.bin"), filename=f"{job_id}.bin",
                                                        allow_private_networks=True), owner=owner, priority=priority)
                 for job_id, owner, priority in jobs]
        original = manager._dispatch

        def watched_dispatch() -> None:
            before = {t for t in tasks if t.started_at is not None}
            original()
            for task in tasks:
                if task.started_at is not None and task not in before:
                    started.append(task)
                    running_by_owner[task.owner] = running_by_owner.get(task.owner, 0) + 1
                    peak[task.owner] = max(peak.get(task.owner, 0), running_by_owner[task.owner])

        manager._dispatch = watched_dispatch  # type: ignore[method-assign]
        manager.set_max_concurrent(max_concurrent)
        await manager.wait_idle()
        await downloader.close()
        if cap:
            assert max(peak.values()) <= cap, peak
        assert all(t.state == "succeeded" for t in tasks), [(t.correlation_id, t.state, t.error) for t in tasks]

    for job_id, _owner, _priority in jobs:
        server.add(f"/fair/{job_id}.bin", Behavior(data=job_id.encode() * 64, stall=0.01))
    asyncio.run(main())
    return started


def test_equal_priority_goes_round_robin_between_submitters(tmp_path: Path, test_server: TestServer) -> None:
    # Alice deja 6 trabajos antes que nadie; Bob 3 y Carol 2 después.
    jobs = [(f"a{i}", ALICE, 0) for i in range(6)] + [(f"b{i}", BOB, 0) for i in range(3)] + [
        (f"c{i}", CAROL, 0) for i in range(2)]
    order = [t.correlation_id for t in _run_jobs(tmp_path, test_server, jobs)]
    assert order == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "a3", "a4", "a5"]


def test_priority_wins_over_turns(tmp_path: Path, test_server: TestServer) -> None:
    jobs = [("a0", ALICE, 0), ("a1", ALICE, 0), ("b0", BOB, 0), ("a-urgent", ALICE, 5), ("b-urgent", BOB, 5)]
    order = [t.correlation_id for t in _run_jobs(tmp_path, test_server, jobs)]
    # Los turnos cuentan por prioridad: Alice ya tiene dos en espera, pero no en la prioridad 5.
    assert order == ["a-urgent", "b-urgent", "a0", "b0", "a1"]


def test_per_submitter_cap_keeps_slots_for_others(tmp_path: Path, test_server: TestServer) -> None:
    # 3 huecos, tope 1 por remitente: Alice nunca corre dos a la vez, y Bob no espera a que acabe.
    jobs = [(f"a{i}", ALICE, 0) for i in range(5)] + [(f"b{i}", BOB, 0) for i in range(2)]
    started = _run_jobs(tmp_path, test_server, jobs, max_concurrent=3, cap=1)
    order = [t.correlation_id for t in started]
    assert order[:2] == ["a0", "b0"], order
    assert sorted(order) == sorted(j[0] for j in jobs)
    # Con el tope, los de Alice van uno tras otro: ninguno empieza antes de que acabe el anterior.
    alice = [t for t in started if t.owner == ALICE]
    for previous, following in itertools.pairwise(alice):
        assert previous.finished_at is not None and following.started_at is not None
        assert following.started_at >= previous.finished_at


def test_jobs_without_owner_share_one_turn(tmp_path: Path, test_server: TestServer) -> None:
    jobs = [("n0", None, 0), ("n1", None, 0), ("a0", ALICE, 0)]
    order = [t.correlation_id for t in _run_jobs(tmp_path, test_server, jobs)]
    assert order == ["n0", "a0", "n1"]


def _drop(spool: Spool, name: str, text: str, mtime: int) -> None:
    path = spool.incoming / name
    path.write_text(text)
    os.utime(path, ns=(mtime, mtime))


def test_claim_order_reads_priority_without_claiming(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    try:
        base = 1_700_000_000 * 10**9
        _drop(spool, "old-low.yaml", "url: http://example.org/a\n", base)
        _drop(spool, "new-high.yaml", "url: http://example.org/b\npriority: 7\n", base + 10)
        _drop(spool, "mid.json", '{"url": "http://example.org/c", "priority": 3}', base + 20)
        _drop(spool, "broken.yaml", "url: [unclosed\n", base - 10)
        _drop(spool, "bomb.yaml", "a: &x [1]\nb: *x\npriority: 9\n", base - 20)  # sólo se lee como texto
        os.mkfifo(spool.incoming / "fifo.yaml")  # nunca se abre (se bloquearía)
        order = ClaimOrder(spool.incoming)
        names = [e.name for e in order.order(spool.scan_incoming(), room=1)]
        # Prioridad primero (la de bomb.yaml se lee como texto, sin expandir nada: su reclamo la
        # rechazará); lo ilegible cuenta como 0 y va por antigüedad (el FIFO es el más nuevo).
        assert names == ["bomb.yaml", "new-high.yaml", "mid.json", "broken.yaml", "old-low.yaml", "fifo.yaml"]
        assert order.peeks == 6
        # Nada se reclamó ni se movió.
        assert sorted(os.listdir(spool.incoming)) == sorted(names)
        assert os.listdir(spool.claimed) == []
        # Una segunda pasada no relee; un archivo reescrito (mtime nuevo) sí.
        order.order(spool.scan_incoming(), room=1)
        assert order.peeks == 6
        _drop(spool, "old-low.yaml", "url: http://example.org/a\npriority: 10\n", base + 30)
        names = [e.name for e in order.order(spool.scan_incoming(), room=1)]
        assert order.peeks == 7 and names[0] == "old-low.yaml"
        # Con sitio para todos no se lee nada: por antigüedad.
        fresh = ClaimOrder(spool.incoming)
        assert next(e.name for e in fresh.order(spool.scan_incoming(), room=100)) == "bomb.yaml"
        assert fresh.peeks == 0
    finally:
        spool.close()


def test_peek_priority_of_odd_values(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bool.yaml").write_text("url: http://e.org/x\npriority: true\n")
    (folder / "list.yaml").write_text("- 1\n- 2\n")
    (folder / "neg.yaml").write_text("url: http://e.org/x\npriority: -4  # comment\n")
    (folder / "twice.yaml").write_text("priority: 3\npriority: 8\n")
    (folder / "nested.yaml").write_text("headers:\n  priority: 7\n")
    (folder / "j.json").write_text('{"url": "http://e.org/x", "priority": 6}')
    os.symlink(folder / "neg.yaml", folder / "link.yaml")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert peek_priority(fd, "bool.yaml") == 0
        assert peek_priority(fd, "list.yaml") == 0
        assert peek_priority(fd, "neg.yaml") == -4
        assert peek_priority(fd, "link.yaml") == 0  # un enlace nunca se sigue
        assert peek_priority(fd, "twice.yaml") == 0
        assert peek_priority(fd, "nested.yaml") == 0
        assert peek_priority(fd, "j.json") == 6
        assert peek_priority(fd, "missing.yaml") == 0
    finally:
        os.close(fd)


def test_fs_kind_reads_the_real_statfs_magic(tmp_path: Path) -> None:
    expected = int(subprocess.run(["stat", "-f", "-c", "%t", str(tmp_path)], capture_output=True, text=True,
                                  check=True).stdout.strip(), 16)
    kind = fs_kind(tmp_path)
    assert kind.magic == expected
    assert kind.network is None  # la suite corre en disco local
    assert choose_watch("auto", tmp_path)[0] == "inotify"
    assert choose_watch("poll", tmp_path) == ("poll", "set in the config")
    assert choose_watch("inotify", tmp_path)[0] == "inotify"
    assert NETWORK_FILESYSTEMS[0x6969] == "nfs" and NETWORK_FILESYSTEMS[0xFF534D42] == "cifs"
    assert fs_kind(tmp_path / "missing").magic is None
