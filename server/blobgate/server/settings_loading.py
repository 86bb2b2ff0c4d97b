"""Loading the settings at start-up: a flag for every setting, the TOML
config file, and one-line errors that name the bad setting. The settings
themselves, their defaults and checks, are in ``settings``."""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from blobgate.server.core.settings import FILE_ONLY, Settings


class SettingsError(Exception):
    """A setting is missing or wrong; the message names it and says what to fix."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(prog: str = "blobgate-server") -> argparse.ArgumentParser:
    """Flags for every setting, plus --config and --dev."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="blobgate: a gRPC storage gateway that streams objects to and from S3.",
    )
    parser.add_argument("--config", help="TOML file of settings (also BLOBGATE_CONFIG)")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="start an in-memory S3 on loopback and serve on 127.0.0.1:50051 "
        "(no AWS needed; data is lost on exit)",
    )
    for name, field in Settings.model_fields.items():
        if name in FILE_ONLY:
            continue
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        if field.annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        parser.add_argument(_flag(name), help=field.description, **kwargs)
    return parser


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or "settings"
    message = first["msg"].removeprefix("Value error, ")
    if name == "settings":
        return f"bad settings: {message}"
    given = first.get("input")
    shown = f" (got {given!r})" if given is not None and not isinstance(given, dict) else ""
    return f"bad setting {name} ({_flag(name)} / BLOBGATE_{name.upper()}): {message}{shown}"


def load_settings(argv: Sequence[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    """Build the settings from flags, ``os.environ`` and the config file;
    raise SettingsError with one line naming the bad setting."""
    args = build_parser().parse_args(argv)
    flags = {name: value for name, value in vars(args).items() if name in Settings.model_fields}
    file_values: dict[str, Any] = {}
    config_path = args.config or os.environ.get("BLOBGATE_CONFIG")
    if config_path:
        try:
            file_values = tomllib.loads(Path(config_path).read_text())
        except OSError as exc:
            raise SettingsError(f"cannot read config file {config_path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {config_path} is not valid TOML: {exc}") from None
        unknown = sorted(set(file_values) - set(Settings.model_fields))
        if unknown:
            raise SettingsError(f"config file {config_path}: unknown setting {unknown[0]!r}")
    try:
        settings = Settings(**flags, _file=file_values)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    return settings, args
