"""Loading the settings: config/default.toml (every default, the only place they are written),
then config/<APP_ENV>.toml, then the environment (upper-case names), then keyword overrides;
each value coerced to its field's type and the whole checked (service/settings/schema.py)."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.resources import CONFIG_DIR
from service.settings.schema import Settings, SettingsError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, kind: type, raw: Any) -> Any:
    if raw is None:
        return None
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise SettingsError(f"{name.upper()} must be true or false, got {raw!r}")
    try:
        if kind is int and not isinstance(raw, bool):
            # int(3.7) would silently truncate a typo in a toml file.
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(raw)
        if kind is float and not isinstance(raw, bool):
            return float(raw)
        if kind is str:
            return str(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name.upper()} must be a {kind.__name__}, got {raw!r}") from exc
    raise SettingsError(f"{name.upper()} must be a {kind.__name__}, got {raw!r}")


_FIELD_TYPES = {"int": int, "float": float, "str": str, "str | None": str, "bool": bool}


def load_settings(
    env: Mapping[str, str] | None = None, config_dir: Path = CONFIG_DIR, **overrides: Any
) -> Settings:
    """The shipped `config/default.toml`, then `<config_dir>/default.toml` (when another
    directory is given) and `<config_dir>/<APP_ENV>.toml`, then the environment, then
    `overrides`. A setting no file gives is unset (None) if it may be, else an error."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    app_env = env.get("APP_ENV", "development")
    paths = [CONFIG_DIR / "default.toml"]
    if config_dir != CONFIG_DIR:
        paths.append(config_dir / "default.toml")
    paths.append(config_dir / f"{app_env}.toml")
    for path in paths:
        if path.is_file():
            with path.open("rb") as fh:
                values.update(tomllib.load(fh))
    values["app_env"] = app_env
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    unknown = set(values) - set(fields)
    if unknown:
        raise SettingsError(f"unknown settings in config: {sorted(unknown)}")
    for name in fields:
        raw = env.get(name.upper())
        if raw is not None and raw != "":
            values[name] = raw
    values.update(overrides)
    for name, field in fields.items():
        if name not in values:
            if str(field.type) != "str | None":
                raise SettingsError(f"{name.upper()} has no value: config/default.toml must "
                                    "give every setting a default")
            values[name] = None
    typed = {
        name: _coerce(name, _FIELD_TYPES[str(fields[name].type)], value)
        for name, value in values.items()
    }
    return Settings(**typed)
