"""kb's one settings tree: defaults, then a YAML file, then `KB_*` environment variables.

Nested fields use a double underscore in the environment: `KB_EMBEDDING__MODEL=BAAI/bge-small-zh-v1.5`.
The YAML file is `$KB_HOME/config.yaml`, or the path in `KB_CONFIG`. This is the only module that
reads the environment. The sections' fields live in kb/config/sections.py and kb/config/llm.py; everything
is importable from `kb.config`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kb.config.llm import LLMSettings
from kb.config.renamed import move_renamed
from kb.config.sections import (
    ANSWER_MODES,
    DEFAULT_EMBEDDER,
    EMBEDDER_LANGUAGES,
    MINILM_EMBEDDER,
    RETRIEVAL_MODES,
    AnswerModeSetting,
    AnswerSettings,
    AppLanguage,
    AppSettings,
    ChunkSettings,
    EmbeddingSettings,
    IngestSettings,
    RetrievalMode,
    RetrievalSettings,
    ServerSettings,
    StoreSettings,
)
from kb.errors import ConfigError

__all__ = [
    "ANSWER_MODES", "DEFAULT_EMBEDDER", "EMBEDDER_LANGUAGES", "KB_NAME_PATTERN", "MINILM_EMBEDDER", "RETRIEVAL_MODES",
    "AnswerModeSetting", "AnswerSettings", "AppLanguage", "AppSettings", "ChunkSettings", "EmbeddingSettings",
    "IngestSettings", "LLMSettings", "RetrievalMode", "RetrievalSettings", "ServerSettings", "Settings", "StoreSettings", "config_path",
    "default_models_dir", "load_settings", "save_settings",
]

# A knowledge base's name (the `kb` setting, --kb, the HTTP API's paths): checked by kb.catalog.check_name.
KB_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# kb's home (its KBs, config.yaml, models) when KB_HOME is not set.
DEFAULT_HOME = "~/.kb"


class Settings(BaseSettings):
    """Everything kb can be told. `kb config` prints the effective values."""

    model_config = SettingsConfigDict(env_prefix="KB_", env_nested_delimiter="__", extra="forbid")

    home: Path = Field(
        Path(DEFAULT_HOME), description="Folder that holds all knowledge bases and config.yaml (KB_HOME)."
    )
    kb: str = Field("default", description="Knowledge base used when a command names none (KB_KB).")
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    chunking: ChunkSettings = Field(default_factory=ChunkSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    app: AppSettings = Field(default_factory=AppSettings)

    @model_validator(mode="before")
    @classmethod
    def _read_old_names(cls, data: Any) -> Any:
        """Settings that moved keep working under their old names, with a one-line notice (one table:
        kb.config.renamed.RENAMED)."""
        return move_renamed(data)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def models_dir(self) -> Path:
        """Where kb builds models (embedding.cache_dir, else <home>/models)."""
        return Path(self.embedding.cache_dir).expanduser() if self.embedding.cache_dir else self.home_dir / "models"


class _YamlSource(PydanticBaseSettingsSource):
    """Reads config.yaml (KB_CONFIG, else $KB_HOME/config.yaml, else ~/.kb/config.yaml)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_path()
        if not path.is_file():
            return {}
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
        return data


def config_path() -> Path:
    """Where the YAML config file is read from."""
    if os.environ.get("KB_CONFIG"):
        return Path(os.environ["KB_CONFIG"]).expanduser()
    home = Path(os.environ.get("KB_HOME", DEFAULT_HOME)).expanduser()
    return home / "config.yaml"


def default_models_dir() -> Path:
    """$KB_HOME/models: where kb builds its default embedder unless embedding.cache_dir says otherwise."""
    return Path(os.environ.get("KB_HOME", DEFAULT_HOME)).expanduser() / "models"


def load_settings(**overrides: Any) -> Settings:
    """Build the effective settings; keyword arguments win over file and environment."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"invalid settings ({problems}); check {config_path()} and KB_* variables") from e


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write the settings that differ from the defaults to the YAML config file; returns its path.

    Only changed values are written, so a later kb version's new defaults still reach the user.
    """
    path = path or config_path()
    data = settings.model_dump(mode="json", exclude_defaults=True, exclude={"home"})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
    return path
