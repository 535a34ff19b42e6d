"""Análisis estricto de un archivo de trabajo ya leído: bytes -> un documento YAML o JSON.

El texto debe ser UTF-8 (sin NUL ni marcas UTF-16/32). JSON (``.json``) se analiza con orjson
y se repasa con un ``object_pairs_hook`` que rechaza claves repetidas. YAML se examina primero
evento a evento con libyaml (``yaml.parse``), antes de construir nada: alias, anclas, etiquetas
explícitas y anidamiento de más de ``MAX_DEPTH`` niveles se rechazan ahí (una bomba de alias no
llega a expandirse). Después se construye con un cargador seguro que además rechaza claves
repetidas y claves de fusión (``<<``). Todo fallo es ``JobRejected`` con qué corregir. Antes,
el mapa plano más común (una línea ``clave: valor`` sencilla por campo) se lee sin libyaml
(``flat_yaml``), dando lo mismo que daría este camino.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import yaml

from daemon.flat_yaml import parse_flat_yaml
from daemon.job_rejected import JobRejected, quoted

__all__ = ["MAX_DEPTH", "load_job_document"]

MAX_DEPTH = 8
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TOO_DEEP = f"the job file nests deeper than {MAX_DEPTH} levels; use a flat mapping"


class _JobLoader(_BaseLoader):  # type: ignore[misc]
    """Cargador seguro que además rechaza claves repetidas y claves de fusión (``<<``).

    PyYAML se queda en silencio con el último valor de una clave repetida: ``url`` escrito dos
    veces descargaría algo distinto de lo que una persona lee primero.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG:
                raise JobRejected("YAML merge keys (<<) are not allowed in job files; write each key out")
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        if len(mapping) != len(node.value):
            seen: list[Any] = []
            for key_node, _value in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise JobRejected(f"duplicate key {quoted(key, 40)} in the job file; write each key once")
                seen.append(key)
        return mapping


def _check_yaml_events(text: str) -> None:
    """Rechaza alias, anclas, etiquetas explícitas y anidamiento profundo antes de construir nada."""
    depth = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise JobRejected("YAML anchors and aliases (&x, *x) are not allowed in job files; write values out")
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise JobRejected(f"YAML tags like {tag!r} are not allowed in job files; use plain values")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise JobRejected(_TOO_DEEP)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _too_deep(document: Any, limit: int) -> bool:
    """Si un documento ya construido anida listas o mapas a más de ``limit`` niveles (iterativo)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return False


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` que rechaza claves repetidas (orjson y json se quedan con la última)."""
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise JobRejected(f"duplicate key {quoted(key, 40)} in the job file; write each key once")
        mapping[key] = value
    return mapping


def _load_json(text: str) -> Any:
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise JobRejected(_TOO_DEEP) from None
        raise JobRejected(f"not valid JSON: {exc}; check the file with `jq . FILE`") from None
    if _too_deep(document, MAX_DEPTH):
        raise JobRejected(_TOO_DEEP)
    try:
        # orjson ya validó el texto y la profundidad: aquí sólo se buscan claves repetidas.
        json.loads(text, object_pairs_hook=_json_pairs)
    except (ValueError, RecursionError) as exc:
        raise JobRejected(f"not valid JSON: {exc}") from None
    return document


def _load_yaml(text: str) -> Any:
    try:
        _check_yaml_events(text)
        documents = list(yaml.load_all(text, Loader=_JobLoader))
    except JobRejected:
        raise
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).replace('in "<unicode string>", ', "").split())
        raise JobRejected(f"not valid YAML: {detail[:300]}") from None
    except RecursionError:
        raise JobRejected(_TOO_DEEP) from None
    except (ValueError, OverflowError) as exc:
        # Fechas imposibles (2024-02-30), enteros de miles de cifras...: el mensaje de Python,
        # sin su consejo para programadores tras el punto y coma.
        detail = str(exc).split(";", 1)[0][:160]
        raise JobRejected(
            f"a value in the job file cannot be read ({detail}); quote dates, times and very long numbers"
        ) from None
    if not documents:
        raise JobRejected("the job file holds only comments; write at least a line like url: https://example.org/file.mp4")
    if len(documents) != 1:
        raise JobRejected(f"the job file holds {len(documents)} YAML documents; put exactly one job in a file")
    return documents[0]


def _decode(data: bytes) -> str:
    """Los bytes como texto UTF-8 (sin BOM); rechaza UTF-16/32, NUL y bytes no UTF-8."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise JobRejected("the job file is UTF-16 or UTF-32 text (it starts with a byte order mark); save it as UTF-8")
    if b"\x00" in data:
        raise JobRejected(
            "the job file contains NUL bytes (binary data or UTF-16/UTF-32 text); it must be UTF-8 text (YAML or JSON)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobRejected(f"the job file is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


def load_job_document(data: bytes, suffix: str) -> Any:
    """Convierte los bytes de un archivo de trabajo en un documento (JSON o YAML estricto)."""
    text = _decode(data)
    if not text.strip():
        raise JobRejected("the job file is empty; write at least a line like url: https://example.org/file.mp4. "
                          "Write the file in spool/tmp/ first, then rename it into spool/incoming/ (or use "
                          "`videonote-dl submit`): a file written straight into incoming/ may be read half-written")
    if suffix == ".json":
        return _load_json(text)
    flat = parse_flat_yaml(text)  # el YAML más común, sin libyaml (``flat_yaml``); si no, el camino completo
    return flat if flat is not None else _load_yaml(text)
