"""Typed configuration: one dataclass schema for the CLI, the experiments and the Flower apps.

:mod:`.schema` (the fields), :mod:`.validation` (allowed values and ranges, stated once),
:mod:`.compose` (Hydra's compose, once per process), :mod:`.flower` (Flower's run config into it).
"""

from .compose import CONFIG_DIR, config_dir, load_config, schema_keys, to_config
from .flower import RUN_CONFIG_KEYS, from_run_config, run_config_overrides
from .schema import (
    SPLIT_SIZE_KEYS,
    Config,
    DataConfig,
    FedConfig,
    InstitutionConfig,
    MethodConfig,
    ModelConfig,
    PartitionConfig,
    RunnerConfig,
    TrainConfig,
    register_configs,
)
from .validation import (
    CHOICES,
    PARTITION_METHODS,
    STRATEGY_NAMES,
    ConfigError,
    num_rounds,
    validate,
    validate_data,
)

__all__ = [
    "CHOICES",
    "CONFIG_DIR",
    "PARTITION_METHODS",
    "RUN_CONFIG_KEYS",
    "SPLIT_SIZE_KEYS",
    "STRATEGY_NAMES",
    "Config",
    "ConfigError",
    "DataConfig",
    "FedConfig",
    "InstitutionConfig",
    "MethodConfig",
    "ModelConfig",
    "PartitionConfig",
    "RunnerConfig",
    "TrainConfig",
    "config_dir",
    "from_run_config",
    "load_config",
    "num_rounds",
    "register_configs",
    "run_config_overrides",
    "schema_keys",
    "to_config",
    "validate",
    "validate_data",
]
