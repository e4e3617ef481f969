"""Settings: defaults, then ``docket.toml``, then ``DOCKET_*`` environment variables,
then command-line flags (applied by the CLI)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "DOCKET_CONFIG"
DEFAULT_CONFIG = Path("docket.toml")


class Settings(BaseSettings):
    """Docket's settings. Environment variables are ``DOCKET_<NAME>``.

    The configuration file is ``$DOCKET_CONFIG`` if set, else ``./docket.toml`` if
    present; its keys are the field names below.
    """

    model_config = SettingsConfigDict(env_prefix="DOCKET_", extra="forbid", frozen=True)

    data_dir: Path = Path("docket-data")
    db_url: str | None = None
    bundle: Path = Path("policies")
    bundle_public_key: Path | None = None
    """When set, every bundle must carry a valid ``bundle.sig`` by this Ed25519 key."""
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    bundle_poll_seconds: float = Field(default=1.0, gt=0)

    @property
    def database_url(self) -> str:
        """``db_url``, or SQLite under the data directory."""
        return self.db_url or f"sqlite:///{self.data_dir / 'docket.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = os.environ.get(CONFIG_ENV)
        path = Path(config) if config else DEFAULT_CONFIG
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config or path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
