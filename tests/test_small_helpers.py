"""Las ayudas de una sola copia (issue 13): nombres numerados, nombres de temporales,
``TempManager.get_subdir``, el cerrojo compartido por el recolector y los componentes de ruta.
Sistema de archivos real, cerrojos ``flock`` reales."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from daemon.dirlock import DIR_FLAGS, DirLock, is_dir_locked, try_lock_fd
from daemon.downloaders import DownloadLifecycle, DownloadOptions, DownloadResult, IsolatedDownload, ProgressCallback
from daemon.ids import InvalidCorrelationId
from daemon.names import path_component_problem, safe_filename_in
from daemon.naming import numbered_names
from daemon.reaper import reap_temp_root
from daemon.spool import Spool
from daemon.temp_manager import TempManager
from daemon.temp_names import DOWNLOAD_DIR_PREFIX, correlation_id_of, download_dir_name, is_temp_name


# --- nombres numerados ------------------------------------------------------------------------
def test_numbered_names_put_the_number_before_the_last_extension() -> None:
    names = numbered_names("clip.tar.gz")
    assert [next(names) for _ in range(3)] == ["clip.tar.gz", "clip.tar-1.gz", "clip.tar-2.gz"]
    assert list(numbered_names("README", limit=3)) == ["README", "README-1", "README-2"]
    assert list(numbered_names(".hidden", limit=2)) == [".hidden", ".hidden-1"]


def test_spool_rejects_a_second_file_of_the_same_name_beside_the_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", instance="test")
    spool.prepare()
    try:
        for text in (b"first", b"second", b"third"):
            (spool.claimed / "job.yaml").write_bytes(text)
            spool.reject("job.yaml", "bad")
        rejected = spool.rejected
        assert sorted(os.listdir(rejected)) == ["job-1.yaml", "job-1.yaml.reason", "job-2.yaml",
                                                "job-2.yaml.reason", "job.yaml", "job.yaml.reason"]
        assert [(rejected / n).read_bytes() for n in ("job.yaml", "job-1.yaml", "job-2.yaml")] == \
            [b"first", b"second", b"third"]
    finally:
        spool.close()


def test_spool_reject_skips_a_name_whose_reason_is_taken(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", instance="test")
    spool.prepare()
    try:
        (spool.rejected / "job.yaml.reason").write_text("an old reason\n")  # el archivo ya no está
        (spool.claimed / "job.yaml").write_bytes(b"x")
        assert spool.reject("job.yaml", "bad") == spool.rejected / "job-1.yaml"
        assert (spool.rejected / "job.yaml.reason").read_text() == "an old reason\n"  # nada se pisa
    finally:
        spool.close()


def test_spool_requeue_never_overwrites_incoming(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", instance="test")
    spool.prepare()
    try:
        (spool.incoming / "clip.yaml").write_bytes(b"newer")
        (spool.claimed / "clip.yaml").write_bytes(b"claimed")
        assert spool.requeue(spool.claimed, "clip.yaml") == "clip-1.yaml"
        assert (spool.incoming / "clip.yaml").read_bytes() == b"newer"
        assert (spool.incoming / "clip-1.yaml").read_bytes() == b"claimed"
    finally:
        spool.close()


# --- nombres de temporales y get_subdir --------------------------------------------------------
def test_temp_names_map_ids_both_ways() -> None:
    assert download_dir_name("clip-42") == f"{DOWNLOAD_DIR_PREFIX}clip-42" == "videonote_dl_clip-42"
    assert correlation_id_of("videonote_dl_clip-42") == "clip-42"
    assert correlation_id_of("videonote_abc_x1") is None
    assert is_temp_name("videonote_abc_x1") and is_temp_name("videonote_dl_a") and not is_temp_name("other")
    with pytest.raises(InvalidCorrelationId):
        download_dir_name("../etc")


def test_get_subdir_is_the_path_the_lifecycle_uses(temp_root: Path) -> None:
    path = TempManager.get_subdir("sub-1")
    assert path == temp_root / "videonote_dl_sub-1" and not path.exists()  # sólo la ruta
    assert TempManager.get_subdir("sub-1", base_dir=temp_root / "x") == temp_root / "x" / "videonote_dl_sub-1"
    with pytest.raises(InvalidCorrelationId):
        TempManager.get_subdir("a/b")
    with IsolatedDownload("sub-1") as entered:
        assert entered == path and path.is_dir()
    assert not path.exists()


def test_download_lifecycle_downloads_into_get_subdir(temp_root: Path) -> None:
    seen: list[Path | None] = []

    async def download(options: DownloadOptions, _progress: ProgressCallback | None) -> DownloadResult:
        seen.append(options.output_path)
        assert options.output_path is not None
        target = options.output_path / "f.bin"
        target.write_bytes(b"x")
        return DownloadResult(path=target, filename="f.bin", size=1, sha256="0" * 64)

    lifecycle = DownloadLifecycle("sub-2", DownloadOptions(url="https://example.org/f.bin"))
    asyncio.run(lifecycle.execute(download))
    assert seen == [TempManager.get_subdir("sub-2")]


# --- cerrojo compartido ------------------------------------------------------------------------
def test_try_lock_fd_reports_a_held_lock_and_takes_a_free_one(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    fd = os.open(target, DIR_FLAGS)
    try:
        with DirLock(target):
            assert try_lock_fd(fd) is False and is_dir_locked(target)
        assert try_lock_fd(fd) is True  # libre: ahora es nuestro
        assert is_dir_locked(target)
    finally:
        os.close(fd)
    assert not is_dir_locked(target)


def test_reaper_leaves_a_locked_dir_and_removes_it_once_free(temp_root: Path) -> None:
    path = TempManager.get_download_temp_dir("old-locked")
    with DirLock(path):
        report = reap_temp_root(temp_root, max_age=0.0)
        assert report.locked == 1 and path.is_dir() and not report.removed
    report = reap_temp_root(temp_root, max_age=0.0)
    assert [entry.correlation_id for entry in report.removed] == ["old-locked"] and not path.exists()


# --- componentes de ruta ------------------------------------------------------------------------
def test_path_components_allow_hidden_names_but_never_a_path(tmp_path: Path) -> None:
    assert safe_filename_in(tmp_path, ".clip.part") == tmp_path / ".clip.part"
    for bad in ("", ".", "..", "a/b", "a\\b", "a\x00b"):
        assert path_component_problem(bad) is not None
        with pytest.raises(ValueError, match="bare file name"):
            safe_filename_in(tmp_path, bad)
