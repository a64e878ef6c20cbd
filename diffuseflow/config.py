"""The workflow's configuration, checked with the words a user needs (no Snakemake here).

``problem(config, schema)`` validates a config dict against the JSON schema and returns one
line naming the offending key (with the nearest valid name for a misspelt one) or None.
``sweep_sections(user_files, cli)`` gives the datasets, backgrounds and simulations the user
asked for: a ``--configfile`` with its own datasets replaces the built-in demo's, rather than
being merged with it (Snakemake merges dictionaries key by key).
"""

from __future__ import annotations

import copy
import difflib
import math

import jsonschema
import yaml

SWEEP_SECTIONS = ("datasets", "backgrounds", "simulations", "maps")


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _schema_at(root: dict, path) -> dict:
    node = root
    for part in path:
        if "$ref" in node:
            node = _resolve(root, node["$ref"])
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return {}
    if "$ref" in node:
        node = _resolve(root, node["$ref"])
    return node


def _resolve(root, ref):
    node = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def problem(config: dict, schema: dict) -> str | None:
    """One line describing what is wrong with ``config``, or None if it is valid."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), e.path))
    if not errors:
        return None
    error = jsonschema.exceptions.best_match(errors)
    where = list(error.absolute_path)
    if error.validator == "additionalProperties":
        node = _schema_at(schema, where)
        allowed = sorted(node.get("properties", {}))
        given = error.instance if isinstance(error.instance, dict) else {}
        unknown = [k for k in given if k not in allowed]
        if allowed and unknown:
            key = unknown[0]
            near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"; did you mean '{near[0]}'?" if near else f" (known: {', '.join(allowed)})"
            return f"config: unknown key '{_key_path([*where, key])}'{hint}"
    if error.validator == "pattern" and where:
        return (
            f"config: {_key_path(where[:-1]) if len(where) > 1 else 'name'} "
            f"{error.instance!r}: "
            f"{error.schema.get('description', 'does not match the allowed pattern')}"
        )
    value = error.instance
    shown = repr(value) if not isinstance(value, dict | list) or len(repr(value)) < 60 else "..."
    return f"config: {_key_path(where)} = {shown}: {error.message.splitlines()[0]}"


def _walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, i))
    else:
        yield path, node


def value_problem(config: dict) -> str | None:
    """What the schema cannot say: a NaN or infinite number anywhere (NaN passes JSON
    Schema's minimum), and ranges given high-to-low (frames, valid_range)."""
    for path, value in _walk(config):
        if isinstance(value, float) and not math.isfinite(value):
            return f"config: {_key_path(path)} = {value}: not a finite number"
    sections = [("", config)]
    for group in ("datasets", "backgrounds"):
        for name, sweep in (config.get(group) or {}).items():
            if isinstance(sweep, dict):
                sections.append((f"{group}.{name}.", sweep))
    for prefix, sec in sections:
        frames = sec.get("frames")
        if isinstance(frames, list) and len(frames) == 2 and frames[0] > frames[1]:
            return f"config: {prefix}frames = {frames}: needs first <= last"
        vr = (sec.get("bin_background") or {}).get("valid_range")
        if isinstance(vr, list) and len(vr) == 2 and not vr[0] < vr[1]:
            return f"config: {prefix}bin_background.valid_range = {vr}: needs LO < HI"
    return None


def load_yaml(path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def _merge(into: dict, new: dict):
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


def sweep_sections(user_files, cli: dict | None = None) -> dict | None:
    """The datasets, backgrounds and simulations of the user's own config files (and
    ``--config`` values), if they name datasets; None to keep the built-in ones."""
    user: dict = {}
    for path in user_files or []:
        _merge(user, load_yaml(path))
    _merge(user, dict(cli or {}))
    if "datasets" not in user:
        return None
    return {key: copy.deepcopy(user.get(key) or {}) for key in SWEEP_SECTIONS}
