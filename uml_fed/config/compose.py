"""Composing the typed config: Hydra's compose over ``configs/`` and the schema, once per process.

Every composition error (an unknown key, a typo in a group name, a value of the wrong type) becomes a
one-line :class:`ConfigError` naming the key and, where there is one, the closest valid key.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .schema import Config
from .validation import ConfigError, check_known_keys, schema_keys, validate

CONFIG_DIR = Path(os.environ.get("UML_FED_CONFIG_DIR", Path(__file__).resolve().parents[2] / "configs"))


def config_dir() -> Path:
    if not (CONFIG_DIR / "config.yaml").is_file():
        raise FileNotFoundError(
            f"configs/config.yaml not found at {CONFIG_DIR}; run from a checkout of uml-fed "
            "(pip install -e .) or set UML_FED_CONFIG_DIR to the folder holding config.yaml"
        )
    return CONFIG_DIR


def one_line_error(e: Exception) -> ConfigError:
    """A Hydra / OmegaConf composition error as one line naming the key."""
    text = str(e)
    m = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if m:
        key = m.group(1)
        close = difflib.get_close_matches(key, schema_keys(), n=1)
        hint = f"; did you mean {close[0]}?" if close else "; the keys are in uml_fed/config/schema.py"
        return ConfigError(f"unknown config key {key!r}{hint}")
    m = re.search(r"Could not find '([\w-]+)/([^']+)'", text)
    if m:
        group, name = m.groups()
        options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        return ConfigError(f"{group}={name}: there is no configs/{group}/{name}.yaml; choose one of {options}")
    full = getattr(e, "full_key", None)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
    cause = e.__cause__
    if cause is not None and str(cause).strip():
        first = f"{first}: {str(cause).strip().splitlines()[0]}"
    return ConfigError(f"{full}: {first}" if full and full not in first else first)


def load_config(overrides: list[str] | tuple[str, ...] = (), output_dir: str | None = None) -> Config:
    """Compose the Hydra config (same files and schema as the CLI) and return the typed object."""
    try:
        if GlobalHydra.instance().is_initialized():
            cfg = compose("config", overrides=list(overrides))
        else:
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                cfg = compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise one_line_error(e) from None
    if output_dir is not None:
        cfg.output_dir = str(output_dir)
    return to_config(cfg)


def to_config(cfg: Any) -> Config:
    """DictConfig -> validated typed Config (an unknown key is refused before anything else)."""
    if isinstance(cfg, Config):
        obj = cfg
    else:
        check_known_keys(cfg)
        if OmegaConf.is_missing(cfg, "output_dir"):
            cfg.output_dir = ""
        try:
            obj = OmegaConf.to_object(cfg)
        except OmegaConfBaseException as e:
            raise one_line_error(e) from None
    validate(obj)
    return obj
