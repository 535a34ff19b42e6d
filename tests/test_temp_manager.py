"""TempManager: nombres por id de correlación, 0700, limpieza exacta, listado, ids inválidos."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from daemon.dirlock import DirLock, DirLockBusy, is_dir_locked
from daemon.downloaders import DownloadLifecycle, DownloadOptions, IsolatedDownload, cleanup_download
from daemon.ids import InvalidCorrelationId, new_correlation_id, validate_correlation_id
from daemon.temp_manager import DOWNLOAD_DIR_PREFIX, TempManager, download_dir_name
from tests.conftest import EventLog

BAD_IDS = ["../x", "a/b", "", "x" * 65, "..", ".", "abc\n", "a b", "ñandú", "a\x00b", "/etc"]
NON_STR_IDS = [None, 123, b"abc", ["abc"], Path("abc")]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --- ids ------------------------------------------------------------------------------------
@pytest.mark.parametrize("good", ["a", "abc123", "clip-42", "A_b-C", "x" * 64, "generated"])
def test_valid_ids_are_accepted(good: str) -> None:
    # Un id generado se crea dentro de la prueba: en la colección cambiaría en cada proceso de xdist.
    good = new_correlation_id() if good == "generated" else good
    assert validate_correlation_id(good) == good


@pytest.mark.parametrize("bad", [*BAD_IDS, *NON_STR_IDS])
def test_bad_ids_are_refused_with_a_clear_error(bad: object) -> None:
    with pytest.raises(InvalidCorrelationId, match=r"1 to 64 characters"):
        validate_correlation_id(bad)


def test_invalid_correlation_id_is_a_value_error() -> None:
    assert issubclass(InvalidCorrelationId, ValueError)


@pytest.mark.parametrize("bad", [*BAD_IDS, 123, b"abc"])
def test_every_entry_point_refuses_bad_ids(temp_root: Path, bad: object) -> None:
    calls = [
        lambda: TempManager(correlation_id=bad),  # type: ignore[arg-type]
        lambda: TempManager.get_download_temp_dir(bad),  # type: ignore[arg-type]
        lambda: TempManager.download_temp_path(bad),  # type: ignore[arg-type]
        lambda: TempManager.cleanup_by_correlation_id(bad),  # type: ignore[arg-type]
        lambda: download_dir_name(bad),  # type: ignore[arg-type]
        lambda: IsolatedDownload(bad),  # type: ignore[arg-type]
        lambda: DownloadLifecycle(bad, DownloadOptions(url="https://example.org/x")),  # type: ignore[arg-type]
        lambda: cleanup_download(bad),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(InvalidCorrelationId):
            call()
    # nada se creó: ni dentro de la raíz ni a su lado
    assert sorted(p.name for p in temp_root.iterdir()) == []
    assert sorted(p.name for p in temp_root.parent.iterdir()) == ["events.jsonl", "temp_root"]


def test_new_correlation_ids_are_valid_and_distinct() -> None:
    ids = {new_correlation_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(validate_correlation_id(i) for i in ids)


# --- directorios de descarga -----------------------------------------------------------------
def test_download_dir_is_named_after_the_correlation_id_with_mode_0700(temp_root: Path) -> None:
    path = TempManager.get_download_temp_dir("clip-42")
    assert path == temp_root / "videonote_dl_clip-42"
    assert path.is_dir() and not path.is_symlink()
    assert _mode(path) == 0o700
    assert download_dir_name("clip-42") == "videonote_dl_clip-42"
    assert TempManager.download_temp_path("clip-42") == path


def test_mode_is_0700_even_with_a_permissive_umask(temp_root: Path) -> None:
    old = os.umask(0)
    try:
        path = TempManager.get_download_temp_dir("umask-0")
    finally:
        os.umask(old)
    assert _mode(path) == 0o700


def test_existing_download_dir_is_reused_with_its_contents(temp_root: Path) -> None:
    path = TempManager.get_download_temp_dir("resume")
    (path / "part.bin").write_bytes(b"12345")
    again = TempManager.get_download_temp_dir("resume")
    assert again == path
    assert (again / "part.bin").read_bytes() == b"12345"


def test_a_symlink_with_the_download_dir_name_is_refused_not_followed(temp_root: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (temp_root / "videonote_dl_trap").symlink_to(target)
    with pytest.raises(FileExistsError, match="not a directory"):
        TempManager.get_download_temp_dir("trap")
    assert list(target.iterdir()) == []
    with pytest.raises(OSError):  # y IsolatedDownload tampoco entra
        IsolatedDownload("trap").__enter__()
    assert list(target.iterdir()) == []


def test_a_file_with_the_download_dir_name_is_refused(temp_root: Path) -> None:
    (temp_root / "videonote_dl_file").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        TempManager.get_download_temp_dir("file")


def test_base_dir_overrides_the_configured_root(temp_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_root"
    path = TempManager.get_download_temp_dir("here", base_dir=other)
    assert path == other / "videonote_dl_here"
    assert TempManager.list_active_downloads(base_dir=other) == ["here"]
    assert TempManager.list_active_downloads() == []


def test_set_temp_root_creates_the_root_and_none_falls_back_to_the_system_tmp(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    TempManager.set_temp_root(root)
    try:
        assert root.is_dir()
        assert TempManager.temp_root() == root
    finally:
        TempManager.set_temp_root(None)
    assert TempManager.temp_root() == Path(tempfile.gettempdir())


def test_temp_root_fixture_points_tempmanager_at_a_test_dir(temp_root: Path, tmp_path: Path) -> None:
    assert TempManager.temp_root() == temp_root
    assert temp_root.parent == tmp_path


# --- limpieza exacta ---------------------------------------------------------------------------
def test_cleanup_matches_the_id_exactly(temp_root: Path, event_log: EventLog) -> None:
    for cid in ("abc", "abcdef", "abc_x", "abc-1", "xabc"):
        TempManager.get_download_temp_dir(cid)
        (temp_root / f"videonote_dl_{cid}" / "data.bin").write_bytes(b"d")
    other_temp = TempManager(correlation_id="abc")
    own_dir = other_temp.temp_dir  # videonote_abc_<aleatorio>
    assert TempManager.cleanup_by_correlation_id("abc") is True
    assert not (temp_root / "videonote_dl_abc").exists()
    for cid in ("abcdef", "abc_x", "abc-1", "xabc"):
        assert (temp_root / f"videonote_dl_{cid}" / "data.bin").read_bytes() == b"d"
    assert own_dir.is_dir()
    assert TempManager.cleanup_by_correlation_id("abc") is False
    removed = event_log.named("tempdir.removed")
    assert [(e["correlation_id"], e["reason"]) for e in removed] == [("abc", "manual")]
    other_temp.cleanup()


def test_cleanup_of_an_absent_id_or_root_is_false(tmp_path: Path) -> None:
    assert TempManager.cleanup_by_correlation_id("nothing", base_dir=tmp_path) is False
    assert TempManager.cleanup_by_correlation_id("nothing", base_dir=tmp_path / "no-root") is False


def test_cleanup_unlinks_a_symlink_without_following_it(temp_root: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("keep")
    (temp_root / "videonote_dl_link").symlink_to(precious)
    assert TempManager.cleanup_by_correlation_id("link") is True
    assert not (temp_root / "videonote_dl_link").is_symlink()
    assert (precious / "keep.txt").read_text() == "keep"


def test_cleanup_does_not_follow_symlinks_inside_the_dir(temp_root: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("keep")
    path = TempManager.get_download_temp_dir("inner")
    (path / "to-precious").symlink_to(precious)
    (path / "to-file").symlink_to(precious / "keep.txt")
    assert cleanup_download("inner") is True
    assert not path.exists()
    assert (precious / "keep.txt").read_text() == "keep"


# --- listado ----------------------------------------------------------------------------------
def test_list_active_downloads(temp_root: Path, tmp_path: Path) -> None:
    assert TempManager.list_active_downloads() == []
    for cid in ("zeta", "alpha", "mid-1"):
        TempManager.get_download_temp_dir(cid)
    (temp_root / "videonote_dl_a-file").write_bytes(b"")
    (temp_root / "videonote_dl_a-link").symlink_to(tmp_path)
    (temp_root / "videonote_other").mkdir()
    (temp_root / "unrelated").mkdir()
    assert TempManager.list_active_downloads() == ["alpha", "mid-1", "zeta"]
    cleanup_download("mid-1")
    assert TempManager.list_active_downloads() == ["alpha", "zeta"]


def test_list_active_downloads_without_a_root(tmp_path: Path) -> None:
    assert TempManager.list_active_downloads(base_dir=tmp_path / "missing") == []


# --- temporales de instancia -------------------------------------------------------------------
def test_instance_temp_dir_naming_with_and_without_id(temp_root: Path) -> None:
    with TempManager(correlation_id="abc123") as with_id, TempManager() as without_id:
        a, b = with_id.temp_dir, without_id.temp_dir
        assert a.parent == temp_root and b.parent == temp_root
        assert a.name.startswith("videonote_abc123_") and len(a.name) > len("videonote_abc123_")
        assert b.name.startswith("videonote_") and not b.name.startswith(DOWNLOAD_DIR_PREFIX)
        assert _mode(a) == 0o700
        assert with_id.temp_dir == a  # estable
    assert not a.exists() and not b.exists()


def test_instance_temp_dir_is_created_lazily(temp_root: Path) -> None:
    manager = TempManager(correlation_id="lazy")
    assert list(temp_root.iterdir()) == []
    path = manager.temp_dir
    assert path.is_dir()
    manager.cleanup()
    assert not path.exists()
    manager.cleanup()  # dos veces no falla


def test_two_instances_with_the_same_id_get_distinct_dirs(temp_root: Path) -> None:
    first, second = TempManager(correlation_id="same"), TempManager(correlation_id="same")
    assert first.temp_dir != second.temp_dir
    first.cleanup()
    assert second.temp_dir.is_dir()
    second.cleanup()


def test_create_temp_file_lives_inside_the_instance_dir(temp_root: Path) -> None:
    with TempManager(correlation_id="files") as manager:
        path = manager.create_temp_file(suffix=".part", prefix="seg")
        assert path.parent == manager.temp_dir
        assert path.name.startswith("seg") and path.name.endswith(".part")
        assert path.read_bytes() == b""
        assert _mode(path) == 0o600
    assert not path.exists()


def test_instance_dir_is_removed_on_exception(temp_root: Path) -> None:
    with pytest.raises(RuntimeError), TempManager(correlation_id="boom") as manager:
        path = manager.temp_dir
        (path / "x").write_bytes(b"x")
        raise RuntimeError("boom")
    assert not path.exists()


def test_instance_base_dir(tmp_path: Path) -> None:
    with TempManager(base_dir=tmp_path / "own") as manager:
        assert manager.temp_dir.parent == tmp_path / "own"


# --- cerrojos -------------------------------------------------------------------------------
def test_dir_lock_is_exclusive_and_released(temp_root: Path) -> None:
    path = TempManager.get_download_temp_dir("locked")
    assert not is_dir_locked(path)
    with DirLock(path):
        assert is_dir_locked(path)
        with pytest.raises(DirLockBusy):
            DirLock(path).acquire()
    assert not is_dir_locked(path)


def test_is_dir_locked_does_not_follow_symlinks(temp_root: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    link = temp_root / "videonote_dl_link"
    link.symlink_to(target)
    with DirLock(target):
        assert is_dir_locked(target)
        assert not is_dir_locked(link)  # por el enlace no se ve (ni se toca) el destino


# --- limpieza por edad ----------------------------------------------------------------------------
def test_cleanup_old_temp_directories_includes_download_dirs(temp_root: Path, event_log: EventLog) -> None:
    old = TempManager.get_download_temp_dir("old-one")
    (old / "f.bin").write_bytes(b"x" * 100)
    young = TempManager.get_download_temp_dir("young-one")
    stale_instance = TempManager(correlation_id="inst").temp_dir
    os.utime(old, (0, 0))
    os.utime(stale_instance, (0, 0))
    report = TempManager.cleanup_old_temp_directories(max_age=3600)
    assert sorted(e.name for e in report.removed) == sorted(["videonote_dl_old-one", stale_instance.name])
    assert not old.exists() and not stale_instance.exists()
    assert young.is_dir()
    (removed_dl,) = [e for e in event_log.named("reaper.removed") if e.get("correlation_id")]
    assert removed_dl["correlation_id"] == "old-one"
    assert removed_dl["bytes_freed"] == 100
