"""config.yaml: valores por defecto embebidos, unidades, errores claros, rutas relativas, diferencias."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from daemon.config import (
    CONFIG_ENV_VAR,
    SCHEMA,
    ConfigError,
    DownloadSettings,
    MetricsSettings,
    ProducerSettings,
    ReaperSettings,
    Settings,
    YtdlpSettings,
    default_settings,
    load_settings,
    restart_required_changes,
    settings_diff,
)
from daemon.postprocess import PostprocessSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
_SECTIONS = {"download": DownloadSettings, "reaper": ReaperSettings, "ytdlp": YtdlpSettings,
             "metrics": MetricsSettings, "postprocess": PostprocessSettings,
             "producers": ProducerSettings}


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _dataclass_default(key: str) -> object:
    """Valor por defecto del campo del dataclass para una clave con punto."""
    if "." in key:
        section, name = key.split(".", 1)
        cls = _SECTIONS[section]
    else:
        cls, name = Settings, key
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


# --- valores por defecto -----------------------------------------------------------------
def test_defaults_without_a_file_resolve_against_cwd(tmp_path: Path) -> None:
    # Sin archivo ni variable de entorno: los valores del diseño, rutas contra el cwd.
    code = (
        "import json; from daemon.config import load_settings; s = load_settings(); "
        "print(json.dumps([str(s.spool_dir), str(s.temp_dir), s.max_concurrent, s.rescan_interval, "
        "s.download.timeout, s.download.max_bytes, s.reaper.max_age, s.log_level, s.source]))"
    )
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV_VAR}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True).stdout
    cwd = tmp_path.resolve()
    assert yaml.safe_load(out) == [
        str(cwd / "var/spool"), str(cwd / "var/tmp"), 4, 5.0, 600.0, 10 * 1024**3, 3600.0, "info", None,
    ]


def test_default_settings_match_the_design_brief(tmp_path: Path) -> None:
    settings = default_settings(tmp_path)
    assert settings.spool_dir == tmp_path / "var/spool"
    assert settings.temp_dir == tmp_path / "var/tmp"
    assert settings.output_dir == tmp_path / "var/downloads"
    assert settings.event_log == tmp_path / "var/log/events.jsonl"
    assert settings.status_file == tmp_path / "var/run/status.json"
    assert (settings.max_concurrent, settings.rescan_interval, settings.shutdown_grace) == (4, 5.0, 30.0)
    assert settings.log_level == "info"
    d = settings.download
    assert (d.timeout, d.retries, d.backoff, d.max_bytes) == (600.0, 3, 1.0, 10 * 1024**3)
    assert d.allowed_schemes == ("http", "https")
    assert d.allow_private_networks is False
    assert (settings.reaper.interval, settings.reaper.max_age) == (600.0, 3600.0)


@pytest.mark.parametrize("spec", SCHEMA, ids=lambda spec: spec.key)
def test_every_schema_default_parses_to_the_dataclass_default(spec: object) -> None:
    # El texto por defecto de SCHEMA (el que se documenta) y el dataclass no pueden divergir.
    parsed = spec.convert(yaml.safe_load(spec.default))  # type: ignore[attr-defined]
    assert parsed == _dataclass_default(spec.key)  # type: ignore[attr-defined]


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, "# nada\n")
    settings = load_settings(path)
    assert settings == dataclasses.replace(default_settings(tmp_path), source=path)


def test_checkout_config_yaml_loads_and_runs_under_var(tmp_path: Path) -> None:
    settings = load_settings(REPO_ROOT / "config.yaml")
    assert settings.spool_dir == REPO_ROOT / "var/spool"
    assert settings.temp_dir == REPO_ROOT / "var/tmp"
    assert settings.source == REPO_ROOT / "config.yaml"
    # lo que dice el archivo del checkout es lo mismo que los valores por defecto, salvo loopback:
    # el config de desarrollo lo permite (la demo sin red) y lo explica en un comentario
    # y el perfil de post-proceso ``videonote`` que se distribuye (issue 16)
    assert settings_diff(default_settings(REPO_ROOT), settings) == ["download.allow_private_networks",
                                                                    "postprocess.profiles"]
    assert "videonote" in settings.postprocess.profiles
    assert "allow_private_networks: true" in (REPO_ROOT / "config.yaml").read_text()
    assert "Loopback" in (REPO_ROOT / "config.yaml").read_text()


# --- unidades -----------------------------------------------------------------------------
def test_units_in_durations_and_sizes(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "rescan_interval: 500ms\nshutdown_grace: 30s\n"
        "download:\n  timeout: 10m\n  backoff: 2s\n  max_bytes: 500MB\n  progress_interval: 250ms\n"
        "reaper:\n  interval: 1h\n  max_age: 2h\n",
    )
    settings = load_settings(path)
    assert settings.rescan_interval == 0.5
    assert settings.shutdown_grace == 30.0
    assert settings.download.timeout == 600.0
    assert settings.download.backoff == 2.0
    assert settings.download.max_bytes == 500 * 1000**2
    assert settings.download.progress_interval == 0.25
    assert settings.reaper.interval == 3600.0
    assert settings.reaper.max_age == 7200.0


@pytest.mark.parametrize(("text", "size"), [("16KiB", 16384), ("500MB", 500_000_000), ("2GiB", 2 * 1024**3)])
def test_size_units(tmp_path: Path, text: str, size: int) -> None:
    settings = load_settings(_write(tmp_path, f"download:\n  max_bytes: {text}\n"))
    assert settings.download.max_bytes == size


def test_bare_numbers_are_seconds_and_bytes(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "rescan_interval: 2\ndownload:\n  max_bytes: 1024\n"))
    assert settings.rescan_interval == 2.0
    assert settings.download.max_bytes == 1024


def test_schemes_and_log_level_are_normalised(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "log_level: DEBUG\ndownload:\n  allowed_schemes: [HTTPS, https]\n"))
    assert settings.log_level == "debug"
    assert settings.download.allowed_schemes == ("https",)


# --- errores -------------------------------------------------------------------------------
def _assert_refused(tmp_path: Path, text: str, key: str, allowed: str) -> None:
    """El config se rechaza con un mensaje que nombra el archivo, la clave y lo admitido."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message
    assert f"'{key}'" in message
    assert allowed in message


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("max_concurent: 4\n", "max_concurent", "max_concurrent"),
        ("download:\n  timout: 5s\n", "download.timout", "download.timeout"),
        ("reaper:\n  age: 1h\n", "reaper.age", "reaper.max_age"),
        ("source: /etc\n", "source", "spool_dir"),
        ("download.timeout: 5s\n", "download.timeout", "download:"),
        ("reaper.max_age: 1h\n", "reaper.max_age", "reaper:"),
    ],
)
def test_unknown_keys_are_refused_naming_key_file_and_allowed(
    tmp_path: Path, text: str, key: str, allowed: str
) -> None:
    _assert_refused(tmp_path, text, key, allowed)


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("max_concurrent: 0\n", "max_concurrent", "1 to 1024"),
        ("max_concurrent: four\n", "max_concurrent", "1 to 1024"),
        ("max_concurrent: 4.0\n", "max_concurrent", "integer"),
        ("max_concurrent: true\n", "max_concurrent", "integer"),
        ("rescan_interval: 10 minutes\n", "rescan_interval", "ms, s, m, h"),
        ("rescan_interval: 0s\n", "rescan_interval", "above zero"),
        ("rescan_interval: .nan\n", "rescan_interval", "finite"),
        ("rescan_interval: .inf\n", "rescan_interval", "finite"),
        ("shutdown_grace: -1\n", "shutdown_grace", "negative"),
        ("log_level: verbose\n", "log_level", "debug, info, warning, error"),
        ("spool_dir: ''\n", "spool_dir", "path"),
        ("spool_dir: 5\n", "spool_dir", "path"),
        ("download:\n  max_bytes: 5 parsecs\n", "download.max_bytes", "KiB"),
        ("download:\n  max_bytes: 0\n", "download.max_bytes", "above zero"),
        ("download:\n  retries: -1\n", "download.retries", "0 to 100"),
        ("download:\n  allowed_schemes: [ftp]\n", "download.allowed_schemes", "http"),
        ("download:\n  allowed_schemes: []\n", "download.allowed_schemes", "non-empty"),
        ("download:\n  allowed_schemes: https\n", "download.allowed_schemes", "list"),
        ("download:\n  allow_private_networks: yes please\n", "download.allow_private_networks", "true or false"),
        ("ytdlp:\n  enabled: 1\n", "ytdlp.enabled", "true or false"),
        ("download:\n  allowed_networks: [10.1.2.0/33]\n", "download.allowed_networks", "CIDR"),
        ("download:\n  allowed_networks: 10.0.0.0/8\n", "download.allowed_networks", "list of networks"),
        ("download:\n  ca_bundle: no-such-ca.pem\n", "download.ca_bundle", "PEM"),
        ("download:\n  ca_bundle: config.yaml\n", "download.ca_bundle", "PEM"),
        ("reaper:\n  interval: 0\n", "reaper.interval", "above zero"),
    ],
)
def test_bad_values_are_refused_naming_key_file_and_allowed(
    tmp_path: Path, text: str, key: str, allowed: str
) -> None:
    _assert_refused(tmp_path, text, key, allowed)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- a\n- b\n", "mapping"),
        ("just a string\n", "mapping"),
        ("download: 5\n", "'download'"),
        ("max_concurrent: [\n", "YAML"),
    ],
)
def test_bad_documents_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_empty_sections_keep_defaults(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "download:\nreaper:\n"))
    assert settings.download == DownloadSettings()
    assert settings.reaper == ReaperSettings()


# --- rutas ---------------------------------------------------------------------------------
def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc" / "vndl"
    folder.mkdir(parents=True)
    path = _write(folder, "spool_dir: spool\ntemp_dir: ../tmp\nevent_log: /var/log/x.jsonl\n")
    other_cwd = tmp_path / "elsewhere"
    other_cwd.mkdir()
    # el cwd del proceso no cuenta: se carga desde otra carpeta, con una ruta relativa al archivo
    code = (
        "import sys; from daemon.config import load_settings; s = load_settings(sys.argv[1]); "
        "print(s.spool_dir); print(s.temp_dir); print(s.event_log); print(s.output_dir); print(s.source)"
    )
    relative = os.path.relpath(path, other_cwd)
    out = subprocess.run([sys.executable, "-c", code, relative], cwd=other_cwd, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    base = folder.resolve()
    assert out[:4] == [
        str(base / "spool"), str(tmp_path.resolve() / "etc" / "tmp"), "/var/log/x.jsonl",
        str(base / "var/downloads"),
    ]
    # ``source`` es absoluta (puede conservar ``..``) y apunta al mismo archivo
    assert Path(out[4]).is_absolute()
    assert os.path.samefile(out[4], path)


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    path = _write(tmp_path, "max_concurrent: 9\n")
    code = "from daemon.config import load_settings; print(load_settings().max_concurrent)"
    env = dict(os.environ, **{CONFIG_ENV_VAR: str(path)})
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "9"


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = default_settings(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_concurrent = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.download.retries = 8  # type: ignore[misc]


# --- diferencias y recarga -------------------------------------------------------------------
def test_settings_diff_and_restart_required_changes(tmp_path: Path) -> None:
    old = load_settings(_write(tmp_path, "max_concurrent: 4\n", "old.yaml"))
    new = load_settings(_write(
        tmp_path,
        "max_concurrent: 8\nspool_dir: other/spool\nlog_level: debug\n"
        "download:\n  timeout: 1m\nreaper:\n  max_age: 2h\n",
        "new.yaml",
    ))
    assert settings_diff(old, new) == [
        "spool_dir", "max_concurrent", "log_level", "download.timeout", "reaper.max_age",
    ]
    assert restart_required_changes(old, new) == ["spool_dir"]


def test_no_differences_between_equal_settings(tmp_path: Path) -> None:
    a = load_settings(_write(tmp_path, "max_concurrent: 4\n", "a.yaml"))
    b = load_settings(_write(tmp_path, "download:\n  retries: 3\n", "b.yaml"))
    assert settings_diff(a, b) == []
    assert restart_required_changes(a, b) == []


def test_every_path_key_requires_a_restart() -> None:
    # Las rutas no se cambian en caliente (el spool, el registro y la raíz temporal ya están abiertos).
    for spec in SCHEMA:
        if spec.kind == "path":
            assert spec.live is False, spec.key


def test_ca_bundle_resolves_against_the_config_folder_and_loads(tmp_path: Path) -> None:
    """Un PEM de verdad (hecho con openssl) junto al config: la ruta relativa se resuelve ahí."""
    import subprocess

    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(tmp_path / "ca.key"), "-out", str(tmp_path / "ca.pem"), "-days", "1",
                    "-subj", "/CN=test CA"], check=True, capture_output=True, timeout=60)
    settings = load_settings(_write(tmp_path, "download:\n  ca_bundle: ca.pem\n  allowed_networks: [10.1.2.3/24]\n"))
    assert settings.download.ca_bundle == tmp_path / "ca.pem"
    assert settings.download.allowed_networks == ("10.1.2.0/24",)
    assert load_settings(_write(tmp_path, "download:\n  ca_bundle: ''\n")).download.ca_bundle is None
