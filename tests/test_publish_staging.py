"""La publicación entre sistemas de archivos: copias preparadas que nadie puede plantar ni dejar atrás.

- La copia va a ``<salida>/.videonote-dl-staging/`` con un nombre aleatorio, ``O_EXCL|O_NOFOLLOW`` y
  ``flock`` mientras se copia: un enlace simbólico plantado nunca se sigue.
- ``sweep_staging`` retira las copias abandonadas (sin cerrojo, más viejas que ``max_age``), nunca
  una en curso; el daemon lo hace al arrancar (todas las que no tienen cerrojo) y en cada pasada
  del recolector.
- Un fallo de almacenamiento al copiar no deja nada en la salida.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
from pathlib import Path

import pytest

from daemon.downloaders.base import StorageError
from daemon.publish import STAGING_DIR, publish_file, recover_publication, sweep_staging
from daemon.publish_folder import publish_folder, recover_folder
from daemon.publish_journal import journal_paths, read_journal
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer
from tests.support.mounts import fill_until_enospc, mounted_tmpfs


def _staged(output: Path, name: str, age: float = 0.0) -> Path:
    folder = output / STAGING_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    path.write_bytes(b"half a copy")
    if age:
        past = time.time() - age
        os.utime(path, (past, past))
    return path


def test_sweep_removes_only_unlocked_and_old_enough(tmp_path: Path) -> None:
    old = _staged(tmp_path, "a.partial", age=7200)
    young = _staged(tmp_path, "b.partial")
    locked = _staged(tmp_path, "c.partial", age=7200)
    fd = os.open(locked, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert sweep_staging(tmp_path, max_age=3600) == 1
        assert not old.exists()
        assert young.exists(), "younger than max_age: kept"
        assert locked.exists(), "a live publisher holds it: kept"
    finally:
        os.close(fd)
    assert sweep_staging(tmp_path, max_age=0) == 2
    assert sorted(os.listdir(tmp_path / STAGING_DIR)) == []


def test_sweep_unlinks_a_planted_symlink_without_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "out" / STAGING_DIR).mkdir(parents=True)
    os.symlink(victim, tmp_path / "out" / STAGING_DIR / "x.partial")
    assert sweep_staging(tmp_path / "out", max_age=0) == 1
    assert victim.read_text() == "keep me"


def test_copy_never_follows_a_planted_staging_symlink(tmp_path: Path) -> None:
    """Si alguien planta la carpeta de preparación como enlace a otro sitio, se aparta sin seguirlo."""
    with mounted_tmpfs(tmp_path / "out-fs", "size=4m") as out:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        os.symlink(elsewhere, out / STAGING_DIR)
        src = tmp_path / "src.bin"
        src.write_bytes(os.urandom(50_000))
        published = publish_file(src, out, None, "clip.bin")
        assert published.path.read_bytes() == src.read_bytes()
        assert list(elsewhere.iterdir()) == []
        aside = [p for p in out.iterdir() if p.name.startswith(f"{STAGING_DIR}.foreign-")]
        assert len(aside) == 1 and os.readlink(aside[0]) == str(elsewhere)
        assert (out / STAGING_DIR).is_dir() and not (out / STAGING_DIR).is_symlink()


@pytest.mark.parametrize("uid, mode", [(2002, 0o777), (2002, 0o700), (0, 0o777)])
def test_a_staging_folder_planted_by_another_user_is_set_aside(tmp_path: Path, uid: int, mode: int) -> None:
    """Una carpeta de preparación ajena (o escribible por otros) no se usa: el otro podría cambiar
    la copia entre el fsync y el link(). Se aparta intacta y el daemon crea la suya (0700)."""
    with mounted_tmpfs(tmp_path / "out-fs", "size=4m") as out:
        planted = out / STAGING_DIR
        planted.mkdir()
        (planted / "bob.txt").write_text("bob's")
        os.chown(planted, uid, uid)
        planted.chmod(mode)
        assert sweep_staging(out, max_age=0) == 0  # nada de dentro se toca
        src = tmp_path / "src.bin"
        src.write_bytes(os.urandom(50_000))
        published = publish_file(src, out, None, "clip.bin")
        assert published.path.read_bytes() == src.read_bytes()
        own = os.stat(out / STAGING_DIR)
        assert (own.st_uid, own.st_mode & 0o777) == (os.geteuid(), 0o700)
        aside = [p for p in out.iterdir() if p.name.startswith(f"{STAGING_DIR}.foreign-")]
        assert len(aside) == 1 and (aside[0] / "bob.txt").read_text() == "bob's"
        assert os.stat(aside[0]).st_uid == uid


def test_enospc_during_the_copy_leaves_nothing_in_the_output(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "out-fs", "size=1m") as out:
        src = tmp_path / "big.bin"
        src.write_bytes(os.urandom(2 * 1024 * 1024))
        with pytest.raises(StorageError) as caught:
            publish_file(src, out, None, "big.bin")
        assert caught.value.details["errno"] == errno.ENOSPC
        leftovers = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()]
        assert leftovers == [], leftovers


def test_daemon_sweeps_abandoned_copies_at_start_up(tmp_path: Path, test_server: TestServer) -> None:
    data = os.urandom(40_000)
    url = test_server.add("/s.bin", Behavior(data=data))
    daemon = DaemonProcess(tmp_path, ytdlp={"enabled": False})
    left = _staged(daemon.output, "deadbeef.partial")  # un publicador murió a mitad de copia
    with daemon:
        wait_until(lambda: daemon.count_events("reaper.staging_removed") > 0, 30, what="reaper.staging_removed")
        assert not left.exists()
        daemon.drop_job({"url": url, "id": "s1", "sha256": hashlib.sha256(data).hexdigest()})
        folder, _record = daemon.wait_record("s1")
        assert folder == "done"


def test_full_output_at_publish_is_retried_then_succeeds(tmp_path: Path, test_server: TestServer) -> None:
    """Salida en otro sistema de archivos y llena al publicar: el archivo descargado se queda en el
    directorio aislado, la publicación se reintenta (``job.publish_retrying``) y, con sitio, termina."""
    data = os.urandom(300_000)
    url = test_server.add("/f.bin", Behavior(data=data))
    with mounted_tmpfs(tmp_path / "out-fs", "size=1m") as out:
        filler = out / "filler"
        fill_until_enospc(filler)
        daemon = DaemonProcess(tmp_path / "d", output_dir=str(out / "out"), ytdlp={"enabled": False},
                               download={"backoff": "200ms", "retries": 8})
        with daemon:
            daemon.drop_job({"url": url, "id": "f1", "sha256": hashlib.sha256(data).hexdigest()})
            wait_until(lambda: daemon.count_events("job.publish_retrying") > 0, 30, what="job.publish_retrying")
            assert daemon.record("f1") is None
            assert [p for p in (out / "out").rglob("*") if p.is_file()] == []
            filler.unlink()
            folder, record = daemon.wait_record("f1")
        assert folder == "done", record
        assert (out / "out" / "f.bin").read_bytes() == data
        assert len(test_server.requests_for("/f.bin")) == 1, "the download is kept, never fetched again"


# --- el diario de publicación: lo que un daemon muerto publicó, visible para quien lo retome ------
def _journaled_copy(tmp_path: Path, out: Path, job_id: str, name: str, data: bytes) -> Path:
    """Publica como el finalizador (copia entre sistemas, con diario) y devuelve el diario, que en
    una caída entre el ``link()`` y el registro es lo único que queda (el directorio aislado, en el
    disco local de un host muerto, se pierde con él)."""
    src = tmp_path / f"{job_id}.src"
    src.write_bytes(data)
    journal = journal_paths(out, STAGING_DIR, job_id)[0]
    published = publish_file(src, out, None, name, journal)
    src.unlink()
    assert published.path.read_bytes() == data
    # Lo que deja una muerte justo tras el link(): el diario escrito y nada después (sin registro).
    return journal


def test_journal_recognises_the_publication_by_inode_even_renamed_and_swept(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "out-fs", "size=4m") as out:
        (out / "clip.bin").write_bytes(b"someone else's clip")  # choque de nombres: va a clip-1.bin
        data = os.urandom(60_000)
        journal = _journaled_copy(tmp_path, out, "j1", "clip.bin", data)
        assert journal.is_file()
        entry = read_journal(journal)
        assert entry is not None and entry.name == "clip.bin" and entry.size == len(data)
        assert sweep_staging(out, max_age=0) == 0, "a journal of a job with no record is kept"
        # La copia preparada ya no está (la barrió el recolector): el inodo basta.
        assert recover_publication(journal) == out / "clip-1.bin"
        assert (out / "clip.bin").read_bytes() == b"someone else's clip"


def test_journal_of_an_unpublished_copy_recovers_nothing_and_a_torn_one_is_ignored(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "out-fs", "size=4m") as out:
        data = os.urandom(30_000)
        journal = _journaled_copy(tmp_path, out, "j2", "gone.bin", data)
        (out / "gone.bin").unlink()  # publicado y retirado (p. ej. sin registro): nada que adoptar
        assert recover_publication(journal) is None
        journal.write_bytes(b'{"dir": "/x", "na')  # roto por una caída a mitad de escribirlo
        assert read_journal(journal) is None and recover_publication(journal) is None


def test_a_reused_inode_with_another_size_is_not_adopted(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "out-fs", "size=4m") as out:
        journal = _journaled_copy(tmp_path, out, "j3", "a.bin", os.urandom(10_000))
        entry = read_journal(journal)
        assert entry is not None
        with open(out / "a.bin", "ab") as grown:  # el mismo inodo, pero no lo que se publicó
            grown.write(b"more")
        assert entry.find_published(want_dir=False) is None


def test_sweep_drops_journals_only_of_finished_jobs(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "out-fs", "size=4m") as out:
        done = _journaled_copy(tmp_path, out, "finished1", "f.bin", os.urandom(5_000))
        live = _journaled_copy(tmp_path, out, "pending1", "p.bin", os.urandom(5_000))
        assert sweep_staging(out, max_age=0, finished=lambda job_id: job_id == "finished1") == 1
        assert not done.exists() and live.exists()


def test_folder_journal_finds_the_renamed_folder(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "out-fs", "size=4m") as out:
        src = tmp_path / "list"
        src.mkdir()
        for n in range(3):
            (src / f"{n}.mp4").write_bytes(os.urandom(2_000))
        (out / "pl1").mkdir()  # tomado: la lista va a pl1-1
        journal = journal_paths(out, STAGING_DIR, "pl1")[1]
        published, renamed = publish_folder(src, out, None, "pl1", journal)
        assert renamed and published == out / "pl1-1"
        assert recover_folder(journal) == out / "pl1-1"
        assert sorted(p.name for p in published.iterdir()) == ["0.mp4", "1.mp4", "2.mp4"]


def test_daemon_removes_the_journal_after_the_record(tmp_path: Path, test_server: TestServer) -> None:
    """Salida en otro sistema de archivos: la copia deja diario, y el registro lo retira."""
    data = os.urandom(50_000)
    url = test_server.add("/j.bin", Behavior(data=data))
    with mounted_tmpfs(tmp_path / "out-fs", "size=4m") as out:
        daemon = DaemonProcess(tmp_path / "d", output_dir=str(out / "out"), ytdlp={"enabled": False})
        with daemon:
            daemon.drop_job({"url": url, "id": "jr1"})
            assert daemon.wait_record("jr1")[0] == "done"
            daemon.wait_temp_dirs_gone()
        assert sorted(os.listdir(out / "out" / STAGING_DIR)) == []
