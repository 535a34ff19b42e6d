"""El contexto que recibe cada escenario: dónde están los archivos servidos, el área de trabajo,
la URL del servidor, las herramientas y las opciones de la ejecución."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from daemon.sha import file_sha256

__all__ = ["BenchContext"]

_BLOCK = 16 * 1024 * 1024


@dataclass(slots=True)
class BenchContext:
    """Todo lo que un escenario necesita saber del entorno de medida."""

    www: Path                      # raíz servida por nginx (tmpfs)
    work: Path                     # área de trabajo: spool, temporales, salidas (tmpfs)
    base_url: str                  # http://127.0.0.1:PUERTO
    tools: dict[str, str | None]   # ruta de cada herramienta (None si falta)
    runs: int = 5
    quick: bool = False
    smoke: bool = False
    profile: bool = False
    server_description: str = ""
    storage_description: str = ""
    _hashes: dict[str, str] = field(default_factory=dict)

    def rounds(self, default: int, heavy: bool = False) -> int:
        """Rondas de un escenario: ``--runs`` manda; ``--quick`` usa 2; los pesados usan menos."""
        if self.quick or self.smoke:
            return 1 if self.smoke else 2
        if heavy:
            return max(3, min(self.runs, default))
        return max(self.runs, 1)

    def scratch(self, name: str) -> Path:
        """Un directorio de trabajo vacío para un escenario (se borra si existía)."""
        path = self.work / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def served_file(self, rel: str, size: int) -> tuple[str, Path]:
        """Crea (una vez) un archivo servido de ``size`` bytes no comprimibles; devuelve (URL, ruta)."""
        path = self.www / rel
        if not path.exists() or path.stat().st_size != size:
            path.parent.mkdir(parents=True, exist_ok=True)
            block = os.urandom(min(size, _BLOCK))
            with open(path, "wb") as handle:
                written = 0
                while written < size:
                    chunk = block[: size - written]
                    handle.write(chunk)
                    written += len(chunk)
            self._hashes.pop(rel, None)
        return f"{self.base_url}/{rel}", path

    def sha256_of(self, rel: str) -> str:
        """sha256 de un archivo servido (calculado una vez)."""
        if rel not in self._hashes:
            self._hashes[rel] = file_sha256(self.www / rel, _BLOCK)
        return self._hashes[rel]

    def small_files(self, count: int, size: int = 16 * 1024) -> list[str]:
        """``count`` archivos pequeños distintos bajo www/small/; devuelve sus URLs."""
        folder = self.www / "small"
        folder.mkdir(parents=True, exist_ok=True)
        urls = []
        for i in range(count):
            path = folder / f"f{i:05d}.bin"
            if not path.exists():
                path.write_bytes(os.urandom(size))
            urls.append(f"{self.base_url}/small/{path.name}")
        return urls
