"""Atajo para el YAML más común de un trabajo: un mapa plano de ``clave: valor`` sencillos.

Lo que escribe ``videonote-dl submit`` (``yaml.safe_dump``) y casi todo productor es una línea
por clave con una URL, un id o un número. Analizarlo con libyaml en dos pasadas (``strict_yaml``)
costaba ~80 µs por trabajo, la parte más cara de la entrada. ``parse_flat_yaml`` reconoce sólo un
subconjunto en el que el resultado de PyYAML (``SafeLoader``, YAML 1.1) es seguro de antemano, y
devuelve None para todo lo demás, que sigue el camino completo:

- cada línea es ``clave: valor``, un comentario de línea entera (``# ...``) o está en blanco; sin
  sangría, tabuladores, ``\\r``, ``---``, comentarios tras el valor ni claves repetidas;
- la clave es ``[a-z_]+`` y no una palabra que YAML 1.1 lee como booleano o nulo (``on``, ``no``...);
- el valor es un entero decimal sin ceros a la izquierda ni ``_``; o un escalar plano que empieza
  por una letra, hecho de caracteres de URL, que no es booleano ni nulo y no acaba en ``:``; o un
  texto entre comillas (simples o dobles) de ASCII imprimible sin comillas ni barras inversas.

Un escalar plano que empieza por letra sólo puede resolverse en YAML 1.1 como booleano o nulo
(los demás resolutores empiezan por dígito, signo, punto, ``~``, ``<`` o ``=``), y esas palabras
se excluyen. tests/test_flat_yaml.py compara este atajo con el cargador completo.
"""

from __future__ import annotations

import re

__all__ = ["parse_flat_yaml"]

_LINE = re.compile(
    r"([a-z_]+): +(?:"
    r"(?P<int>-?(?:0|[1-9][0-9]*))"
    r"|(?P<plain>[A-Za-z][A-Za-z0-9._/:?=&%+~,@!*$;#()-]*)"
    r"|'(?P<single>[\x20-\x26\x28-\x5b\x5d-\x7e]*)'"
    r'|"(?P<double>[\x20\x21\x23-\x5b\x5d-\x7e]*)"'
    r")"
)
_MAX_DIGITS = 18
# Lo que SafeLoader resuelve como booleano o nulo (no como texto) aunque empiece por letra.
_NOT_TEXT = frozenset({"yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE",
                       "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL"})


def parse_flat_yaml(text: str) -> dict[str, str | int] | None:
    """El mapa si ``text`` está en el subconjunto plano (ver el docstring del módulo); si no, None."""
    document: dict[str, str | int] = {}
    for line in text.split("\n"):
        if not line:
            continue
        if line[0] == "#":  # libyaml rechaza controles también en un comentario: ése, por el camino completo
            if not (line.isascii() and line.isprintable()):
                return None
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            return None
        key = match.group(1)
        if key in _NOT_TEXT or key in document:
            return None
        plain = match.group("plain")
        if plain is not None:
            if plain in _NOT_TEXT or plain.endswith(":"):
                return None
            document[key] = plain
            continue
        number = match.group("int")
        if number is not None:
            if len(number) > _MAX_DIGITS:  # int() de Python tiene un límite de cifras: el camino completo lo dice
                return None
            document[key] = int(number)
            continue
        quoted = match.group("single")
        document[key] = quoted if quoted is not None else match.group("double")
    return document or None
