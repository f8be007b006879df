"""Typed configuration: one dataclass schema for the CLI, the sweeps and the Flower apps.

The schema is registered in Hydra's ConfigStore as ``base_config``; YAML groups under ``configs/``
(data, model, train, fed, experiment) only override its fields, so a typo in any YAML file or command
line override fails loudly.  Flower's flat run config is bridged into the same schema by
:func:`from_run_config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING, OmegaConf


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key, the value and the remedy."""


SPLIT_SIZE_KEYS = ("train_per_class", "val_per_class", "test_per_class")
STRATEGY_NAMES = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedmedian", "fedtrimmedavg")
PARTITION_METHODS = ("iid", "dirichlet", "natural")


@dataclass
class InstitutionConfig:
    name: str = ""  # unique institution name; a deployed node's config names it (node config `institution`)
    modality: str = ""  # its projection group: institutions of one modality hold the same bands (s1, s2, rgb, ...)
    sensor: str = ""  # the source's sensor key whose files/stream it reads; "" = modality
    bands: list[str] = field(default_factory=list)  # its bands in order; empty = data.bands.<sensor> or the sensor's
    root: str = ""  # its dataset root (real sources); "" = data.root


@dataclass
class PartitionConfig:
    institutions: int = (
        1  # institutions per modality, >= 1: each modality's pool split among this many (<modality>_<i>); 1 = none
    )
    method: str = "iid"  # iid (seeded shuffle, equal parts) | dirichlet (label skew, alpha) | natural (by the column)
    alpha: float = 0.5  # dirichlet concentration, > 0: small = each institution dominated by few classes
    column: str = "region"  # natural: scene metadata (synthetic region | bigearthnet_v2 country | bigearthnet_v1 tile | sen12ms roi)
    min_size: int = 0  # every institution's part holds at least this many samples, >= 0 (dirichlet redraws, 10 tries)


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | bigearthnet_v1 | bigearthnet_v2 | sen12ms | eurosat | folder
    root: str | None = None  # dataset root on disk (real sources only); absolute path
    cache_dir: str | None = None  # decode-once cache (real sources); default <root>/.uml_fed_cache
    modalities: list[str] = field(
        default_factory=lambda: ["s1", "s2"]
    )  # sensors; one institution each (unless data.institutions/partition)
    bands: dict[str, list[str]] = field(default_factory=dict)  # band names per modality; empty = sensor default
    per_band: bool = False  # each band of each listed sensor becomes its own institution (paper Exp. 1)
    classes: list[str] = field(default_factory=list)  # class names; empty = the source's default list
    train_per_class: int = 100  # training samples per class and institution (paper low-data: 100)
    val_per_class: int = 30  # validation samples per class and institution
    test_per_class: int = 50  # test samples per class and institution
    sizes: dict[str, dict[str, int]] = field(
        default_factory=dict
    )  # per institution (or partitioned modality's pool): +data.sizes.s1.train_per_class=20 (unset = the above)
    institutions: list[InstitutionConfig] = field(
        default_factory=list
    )  # explicit institutions; empty = derived from data.modalities
    partition: PartitionConfig = field(
        default_factory=PartitionConfig
    )  # split each modality's pool among institutions (flwr-datasets)
    patch_size: int = 32  # synthetic patch side in pixels (BigEarthNet 120, SEN12MS 256, EuroSAT 64)
    paired: bool = False  # real archives: give all institutions the SAME scenes (paired reference only)
    normalization: str = "train"  # train = per-band stats of the institution's own train split | published
    season: str = "summer"  # SEN12MS season filter: spring | summer | fall | winter
    skip_unreadable: bool = False  # real sources: skip unreadable patches with a warning (counted in reports)
    constant_bands: str = "error"  # a band constant over an institution's train split: error | warn (kept, unscaled)
    resize: int = 0  # real sources: resample every patch bilinearly to this side in pixels; 0 = native (folder: needed for mixed sizes)
    short_class: str = "raise"  # real sources, class too small for the split sizes: raise | shrink (that class's splits) | drop (the class)
    igbp_scheme: str = (
        "full"  # SEN12MS labels: full = 17 IGBP classes (the paper's 7 summer classes) | simplified = 10 classes
    )
    snr_scale: float = 1.0  # synthetic: multiplies the optical sensor noise (1 = nominal Sentinel-2 noise)
    enl: float = 4.4  # synthetic: equivalent number of looks of the SAR speckle (Sentinel-1 IW GRD ~4.4)
    mixing: float = 0.35  # synthetic: mean fraction of a scene covered by non-dominant land covers (0..0.6)
    region_effect: float | None = (
        None  # synthetic: strength of the regions' phenology/soil shift, >= 0; None = 1 for partitioned pools, else 0
    )

    def __post_init__(self) -> None:
        # a DataConfig rebuilt from plain data (dataclasses.asdict, JSON) gets its nested entries typed again
        if isinstance(self.partition, Mapping):
            self.partition = PartitionConfig(**self.partition)
        self.institutions = [
            i if isinstance(i, InstitutionConfig) else InstitutionConfig(**i) for i in self.institutions
        ]

    def split_sizes(self, institution: str) -> tuple[int, int, int]:
        """(train, val, test) samples per class for one institution: ``sizes.<institution>`` or the defaults."""
        own = self.sizes.get(institution, {})
        return tuple(int(own.get(k, getattr(self, k))) for k in SPLIT_SIZE_KEYS)  # type: ignore[return-value]


@dataclass
class ModelConfig:
    width: int = 16  # channels of the first ResNet stage (64 = the paper's ResNet-18)
    projection_blocks: int = 2  # basic blocks in each private projection f_k, 0..8 (paper: 2)
    stem: str = "small"  # small = 3x3 stride-1 conv (patches <= 64 px) | large = 7x7 stride-2 + max-pool
    track_running_stats: bool = False  # False = static BN (paper); True = usual running-average BN (ablation)
    shared_components: int = 0  # > 0: each modality's own bias-free linear map Q^(q) of its pooled embedding to this many shared components before the shared classifier (ISCA, method=isca); needs projection_blocks=8, at most 8 * width; 0 = no map


@dataclass
class TrainConfig:
    epochs: int = 200  # total training epochs (federated: R x L)
    batch_size: int = 32  # mini-batch size b per modality and step
    steps_per_epoch: str = "largest"  # largest = every model of the run (UML, baselines, federated clients) takes the run's largest institution's full batches per epoch (equal steps) | own = its own data's
    lr: float = 1e-3  # AdamW initial learning rate
    weight_decay: float = 0.01  # AdamW weight decay
    lr_step: int = 150  # StepLR step size in epochs
    lr_gamma: float = 0.1  # StepLR decay factor
    select_after: int = 190  # model selection: best val accuracy among epochs > select_after (0-based count)
    eval_batch_size: int = 600  # batch size for validation/test forward passes
    bn_cal_epochs: int = 10  # Algorithm 2: calibration epochs E_cal
    bn_cal_batch_size: int = 600  # Algorithm 2: calibration batch size B
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    precision: str = "auto"  # fp32 | bf16 (autocast) | auto = bf16 on a GPU that supports it or a CPU with native bf16 (AVX512-BF16, AMX), else fp32
    channels_last: str = "auto"  # on | off | auto = on (NHWC: faster on GPUs and on the CPUs measured)
    compile: str = "off"  # torch.compile the projections and backbone: off | default | reduce-overhead | max-autotune
    run_unimodal: bool = True  # centralized command: also train the unimodal baselines for comparison
    pool_institutions: bool = (
        False  # centralized: pool the institutions of one sensor (one projection per sensor) instead of one each
    )
    unimodal_bn: str = "ordinary"  # unimodal baseline + paired reference: ordinary = running stats, no calibration (Table 7) | calibrated = static BN + Alg. 2
    progress: bool = True  # show progress bars


@dataclass
class FedConfig:
    local_epochs: int = 5  # L: local epochs per round
    rounds: int = 0  # R; 0 = train.epochs // local_epochs
    strategy: str = "fedavg"  # fedavg | fedprox | fedavgm | fedadam | fedyogi | fedadagrad | fedmedian | fedtrimmedavg
    proximal_mu: float = 0.0  # FedProx mu (> 0 adds mu/2 ||theta - theta_global||^2 on the backbone)
    server_lr: float = 0.1  # FedAvgM: server learning rate, > 0; with server_momentum 0.9 the steady-state step equals FedAvg's (0.1 / (1 - 0.9) = 1; Hsu et al. 2019)
    server_momentum: float = 0.9  # FedAvgM: server momentum, in [0, 1) (0 with server_lr 1 is FedAvg)
    eta: float = 0.01  # FedAdam/FedYogi/FedAdagrad: server learning rate, > 0; 0.01 moves the backbone 0.4x/0.6x/1.3x FedAvg's round-1 step (scripts/strategy_scale.py; Flower's 0.1: 4x/6x/13x)
    tau: float = 1e-3  # FedAdam/FedYogi/FedAdagrad: adaptivity, > 0 (added to sqrt(v) in the denominator)
    beta_1: float = 0.9  # FedAdam/FedYogi: first-moment decay, in [0, 1)
    beta_2: float = 0.99  # FedAdam/FedYogi: second-moment decay, in [0, 1)
    trim_beta: float = 0.2  # FedTrimmedAvg: fraction of institutions cut at each end per coordinate, in [0, 0.5)
    weighting: str = "uniform"  # uniform = 1/K per institution (paper) | num_examples (Flower's default) | modality = 1/M per modality
    projection_sharing: str = (
        "none"  # none = projections strictly private (paper) | modality = averaged among institutions of one modality
    )
    keep_optimizer_state: bool = True  # clients keep AdamW moments across rounds (in their private state)
    fraction_train: float = 1.0  # fraction of institutions sampled per round (seeded)
    min_nodes: int = (
        0  # 0 = every institution takes part in every round (a lost one is waited for); N = go on with >= N replies
    )
    handshake_timeout: float = 120.0  # seconds to wait for every institution to connect and describe itself
    round_timeout: float = 3600.0  # seconds the server waits for a round's replies
    rejoin_timeout: float = (
        600.0  # min_nodes=0: seconds to wait for a lost institution to come back, then the run fails
    )
    poll_interval: float = 0.1  # seconds between the server's pulls for replies
    error_detail: str = (
        "auto"  # what a failing client tells the server: full | type (error type + code) | auto = type when deployed
    )
    tensorboard: bool = False  # per-round metrics to <run>/tensorboard (needs the tensorboard extra)
    wire_dtype: str = (
        "float32"  # backbone arrays on the wire: float32 | float16 (half the bytes; aggregation stays float32)
    )
    sweep_local_epochs: list[int] = field(default_factory=lambda: [2, 5, 10, 25, 50])  # L values of a sweep
    client_cpus: int = 1  # Ray simulation: CPUs per client (whole CPUs)
    client_gpus: float = 0.0  # Ray simulation: GPUs per client (fractions share a GPU)
    resume: bool = False  # continue an interrupted run from its output-dir's server_state.pt


@dataclass
class MethodConfig:
    name: str = "uml"  # uml (the paper) | dann | cdan | mcc | mdd | margin_disparity | isca | isca_e2e (configs/method/); choose with method=<name>
    # The baselines' coefficients (uml uses none). Defaults: the original papers / reference code, cited per field.
    align_weight: float = 1.0  # weight of the alignment term added to the mean cross-entropy, >= 0 (tllib DANN/CDAN/MCC/MDD trade-off 1.0; ISCA lambda_dist 1.0)
    grl_max: float = 1.0  # DANN/CDAN/MDD: final gradient-reversal coefficient, >= 0 (1: DANN paper, tllib; mdd.yaml: 0.1, official MDD GRL high)
    grl_gamma: float = 10.0  # DANN/CDAN/MDD: GRL ramp lambda_p = grl_max (2 / (1 + exp(-grl_gamma p)) - 1), p = training progress, >= 0 (10: DANN paper)
    disc_hidden: int = (
        1024  # DANN/CDAN: hidden width of the modality discriminator, >= 1 (tllib DomainDiscriminator 1024)
    )
    cdan_entropy: bool = (
        False  # CDAN: True = CDAN+E entropy weighting; False = plain CDAN (the paper's Table 4 row names no variant)
    )
    cdan_randomized_dim: int = 1024  # CDAN: output size of the randomized multilinear map, used when features x classes > 4096, >= 1 (Long et al. 2018: 1024)
    mcc_temperature: float = 2.5  # MCC: softmax temperature, > 0 (Jin et al. 2020 and tllib default 2.5)
    density_weight: float = (
        0.01  # MDD (maximum density divergence): alpha, weight of L_mdd, >= 0 (Li et al. 2020: best at 0.01)
    )
    disparity_margin: float = (
        4.0  # margin disparity discrepancy: margin gamma, > 0 (Zhang et al. 2019 and tllib default 4)
    )
    isca_whiten_weight: float = (
        1.0  # ISCA (both variants): weight of the whitening penalty per modality, >= 0 (ISCA scripts: lambda 1.0)
    )
    isca_cls_weight: float = 0.1  # ISCA: cross-entropy weight lambda_cls, >= 0 (ISCA scripts: 0.1)
    isca_mcc_weight: float = 0.1  # ISCA: weight of the MCC term, >= 0 (ISCA code: 0.1; 0 = plain SCA)
    isca_mcc_temperature: float = 0.55  # ISCA: MCC temperature, > 0 (ISCA scripts: 0.55)
    isca_map_lr: float = 2e-4  # ISCA: Adam learning rate of the linear maps Q, > 0 (ISCA scripts: alpha 2e-4)
    isca_disc_lr: float = 2e-5  # ISCA: Adam learning rate of the discriminator, > 0 (ISCA scripts: beta 2e-5)
    isca_cls_lr: float = 4e-4  # ISCA: initial Adam learning rate of the classifier, > 0, decayed (1 + 0.001 t)^-0.75 (ISCA code: 0.02 x 0.02)
    isca_iterations: int = 1250  # ISCA: iterations of the alternating training, >= 1 (ISCA code: 10 epochs x 125)
    isca_epochs: int = 10  # ISCA: epochs the iterations are cut into for the label-noise decay, >= 1 (ISCA scripts: 10)
    isca_batch_size: int = 64  # ISCA: embeddings per modality and iteration, >= 2 (ISCA scripts: 64)
    isca_label_noise: float = (
        0.2  # ISCA: width of the discriminator labels' uniform noise at epoch 0, in [0, 0.5) (ISCA code: 0.2)
    )
    isca_eval_every: int = (
        10  # ISCA: iterations between validations for model selection, >= 1 (ISCA code: print_freq 10)
    )


@dataclass
class RunnerConfig:
    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3, 4]
    )  # `uml-fed experiment`: seeds of every arm (5: one or three seeds cannot carry an effect of a few points)
    threads: int = (
        1  # torch threads of every run, >= 1: pinned and part of the run's identity, since the numbers depend on it
    )
    root: str = "outputs/experiments"  # runs (runs/) and reports (<experiment>/<variant>/); relative = to the cwd
    report_root: str = ""  # where reports go instead (e.g. docs/results); "" = root. Runs always stay under root
    scale: str = (
        "cpu"  # cpu = embedded synthetic data, CPU-sized model/schedule | paper = a real archive, Table 7 (GPU)
    )
    dataset: str = "bigearthnet"  # paper scale: bigearthnet | sen12ms | eurosat_s1_rgb (configs/experiment presets)
    parallel: int = 1  # runs at once, each in its own process (2 single-thread runs use both cores of a 2-core machine; a federated run trains its institutions in parallel)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    seed: int = 0  # fixes data generation/subsets, initialisation and batch order
    name: str = "default"  # experiment name, used in run directory names
    output_dir: str = MISSING  # run directory; set by the CLI (Hydra's) or the ServerApp


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


register_configs()

CONFIG_DIR = Path(os.environ.get("UML_FED_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))


def config_dir() -> Path:
    if not (CONFIG_DIR / "config.yaml").is_file():
        raise FileNotFoundError(
            f"configs/config.yaml not found at {CONFIG_DIR}; run from a checkout of uml-fed "
            "(pip install -e .) or set UML_FED_CONFIG_DIR to the folder holding config.yaml"
        )
    return CONFIG_DIR


def load_config(overrides: list[str] | tuple[str, ...] = (), output_dir: str | None = None) -> Config:
    """Compose the Hydra config (same files and schema as the CLI) and return the typed object."""
    gh = GlobalHydra.instance()
    if gh.is_initialized():
        cfg = compose("config", overrides=list(overrides))
    else:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides))
    if output_dir is not None:
        cfg.output_dir = str(output_dir)
    return to_config(cfg)


def to_config(cfg: Any) -> Config:
    """DictConfig -> validated typed Config."""
    if isinstance(cfg, Config):
        obj = cfg
    else:
        if OmegaConf.is_missing(cfg, "output_dir"):
            cfg.output_dir = ""
        obj = OmegaConf.to_object(cfg)
    validate(obj)
    return obj


def validate(cfg: Config) -> None:
    m, t, f, d = cfg.model, cfg.train, cfg.fed, cfg.data
    if not 0 <= m.projection_blocks <= 8:
        raise ConfigError(f"model.projection_blocks={m.projection_blocks} must be in 0..8 (ResNet-18 has 8 blocks)")
    if m.stem not in ("small", "large"):
        raise ConfigError(f"model.stem={m.stem!r} must be 'small' or 'large'")
    if m.width < 1:
        raise ConfigError(f"model.width={m.width} must be >= 1")
    if m.shared_components < 0:
        raise ConfigError(f"model.shared_components={m.shared_components} must be >= 0 (0 = no linear map)")
    if m.shared_components and m.projection_blocks != 8:
        raise ConfigError(
            f"model.shared_components={m.shared_components} maps the pooled per-modality embedding: "
            f"set model.projection_blocks=8 (got {m.projection_blocks}) or model.shared_components=0"
        )
    if m.shared_components > 8 * m.width:
        raise ConfigError(
            f"model.shared_components={m.shared_components} exceeds the embedding size 8 * model.width = "
            f"{8 * m.width}; whitened components need at most that many"
        )
    for key in ("epochs", "batch_size", "eval_batch_size", "bn_cal_batch_size", "lr_step"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key}={getattr(t, key)} must be >= 1")
    for key, allowed in (
        ("precision", ("auto", "fp32", "bf16")),
        ("channels_last", ("auto", "on", "off")),
        ("compile", ("off", "default", "reduce-overhead", "max-autotune")),
    ):
        if getattr(t, key) not in allowed:
            raise ConfigError(f"train.{key}={getattr(t, key)!r} must be one of {list(allowed)}")
    if t.steps_per_epoch not in ("largest", "own"):
        raise ConfigError(f"train.steps_per_epoch={t.steps_per_epoch!r} must be 'largest' or 'own'")
    if t.unimodal_bn not in ("ordinary", "calibrated"):
        raise ConfigError(f"train.unimodal_bn={t.unimodal_bn!r} must be 'ordinary' or 'calibrated'")
    if t.bn_cal_epochs < 0:
        raise ConfigError(f"train.bn_cal_epochs={t.bn_cal_epochs} must be >= 0")
    if f.local_epochs < 1:
        raise ConfigError(f"fed.local_epochs={f.local_epochs} must be >= 1")
    choices = {
        "strategy": STRATEGY_NAMES,
        "weighting": ("uniform", "num_examples", "modality"),
        "projection_sharing": ("none", "modality"),
        "error_detail": ("auto", "full", "type"),
        "wire_dtype": ("float32", "float16"),
    }
    for key, allowed in choices.items():
        if getattr(f, key) not in allowed:
            raise ConfigError(f"fed.{key}={getattr(f, key)!r} must be one of {list(allowed)}")
    if f.strategy in ("fedmedian", "fedtrimmedavg") and f.weighting != "uniform":
        raise ConfigError(
            f"fed.strategy={f.strategy} takes a coordinate-wise statistic of the institutions' backbones and "
            f"cannot weight them: fed.weighting={f.weighting!r} is not honoured; set fed.weighting=uniform"
        )
    for key, low, high in (
        ("server_momentum", 0.0, 1.0),
        ("beta_1", 0.0, 1.0),
        ("beta_2", 0.0, 1.0),
        ("trim_beta", 0.0, 0.5),
    ):
        if not low <= getattr(f, key) < high:
            raise ConfigError(f"fed.{key}={getattr(f, key)} must be in [{low:g}, {high:g})")
    for key in ("server_lr", "eta", "tau"):
        if getattr(f, key) <= 0:
            raise ConfigError(f"fed.{key}={getattr(f, key)} must be > 0")
    if f.proximal_mu < 0 or (f.proximal_mu > 0 and f.strategy != "fedprox"):
        raise ConfigError(f"fed.proximal_mu={f.proximal_mu} must be >= 0 and is only used by fed.strategy=fedprox")
    if not 0 < f.fraction_train <= 1:
        raise ConfigError(f"fed.fraction_train={f.fraction_train} must be in (0, 1]")
    for key in ("handshake_timeout", "round_timeout", "rejoin_timeout", "poll_interval"):
        if getattr(f, key) <= 0:
            raise ConfigError(f"fed.{key}={getattr(f, key)} must be > 0 seconds")
    if f.min_nodes < 0:
        raise ConfigError(f"fed.min_nodes={f.min_nodes} must be >= 0 (0 = all institutions)")
    if t.lr <= 0 or t.weight_decay < 0 or not 0 < t.lr_gamma <= 1:
        raise ConfigError(
            f"train.lr={t.lr}, train.weight_decay={t.weight_decay}, train.lr_gamma={t.lr_gamma}: "
            "need lr > 0, weight_decay >= 0, 0 < lr_gamma <= 1"
        )
    if cfg.runner.scale not in ("cpu", "paper"):
        raise ConfigError(f"runner.scale={cfg.runner.scale!r} must be 'cpu' or 'paper'")
    if cfg.runner.dataset not in ("bigearthnet", "sen12ms", "eurosat_s1_rgb"):
        raise ConfigError(f"runner.dataset={cfg.runner.dataset!r} must be bigearthnet, sen12ms or eurosat_s1_rgb")
    if cfg.runner.threads < 1:
        raise ConfigError(f"runner.threads={cfg.runner.threads} must be >= 1")
    if cfg.runner.parallel < 1:
        raise ConfigError(f"runner.parallel={cfg.runner.parallel} must be >= 1")
    if not cfg.runner.seeds:
        raise ConfigError("runner.seeds is empty: give at least one seed, e.g. runner.seeds=[0,1,2]")
    validate_data(d)
    validate_method(cfg.method)


def validate_method(c: MethodConfig) -> None:
    """The baselines' coefficients (the name is checked by ``uml_fed.methods.build_method``)."""
    nonnegative = ("align_weight", "grl_max", "grl_gamma", "density_weight", "isca_whiten_weight")
    for key in (*nonnegative, "isca_cls_weight", "isca_mcc_weight"):
        if getattr(c, key) < 0:
            raise ConfigError(f"method.{key}={getattr(c, key)} must be >= 0")
    for key in ("disc_hidden", "cdan_randomized_dim", "isca_iterations", "isca_epochs", "isca_eval_every"):
        if getattr(c, key) < 1:
            raise ConfigError(f"method.{key}={getattr(c, key)} must be >= 1")
    positive = ("mcc_temperature", "disparity_margin", "isca_mcc_temperature", "isca_map_lr")
    for key in (*positive, "isca_disc_lr", "isca_cls_lr"):
        if getattr(c, key) <= 0:
            raise ConfigError(f"method.{key}={getattr(c, key)} must be > 0")
    if c.isca_batch_size < 2:
        raise ConfigError(f"method.isca_batch_size={c.isca_batch_size} must be >= 2 (batch statistics)")
    if not 0 <= c.isca_label_noise < 0.5:
        raise ConfigError(f"method.isca_label_noise={c.isca_label_noise} must be in [0, 0.5)")


def validate_data(d: DataConfig) -> None:
    """The data part of :func:`validate` (no I/O; the data package checks names against the source)."""
    if not d.modalities and not d.institutions:
        raise ConfigError("data.modalities is empty: list at least one institution's sensor")
    if len(set(d.modalities)) != len(d.modalities):
        raise ConfigError(f"data.modalities={list(d.modalities)} lists a modality twice")
    for key in SPLIT_SIZE_KEYS:
        if getattr(d, key) < 1:
            raise ConfigError(f"data.{key}={getattr(d, key)} must be >= 1")
    for name, own in d.sizes.items():
        for key, value in own.items():
            if key not in SPLIT_SIZE_KEYS:
                raise ConfigError(f"data.sizes.{name}.{key} is not a size; use {', '.join(SPLIT_SIZE_KEYS)}")
            if value < 1:
                raise ConfigError(f"data.sizes.{name}.{key}={value} must be >= 1")
    for key, value, allowed in (
        ("normalization", d.normalization, ("train", "published")),
        ("short_class", d.short_class, ("raise", "shrink", "drop")),
        ("constant_bands", d.constant_bands, ("error", "warn")),
    ):
        if value not in allowed:
            raise ConfigError(f"data.{key}={value!r} must be one of {', '.join(allowed)}")
    if d.resize < 0:
        raise ConfigError(f"data.resize={d.resize} must be >= 0 (0 = native patch size)")
    if d.region_effect is not None and d.region_effect < 0:
        raise ConfigError(f"data.region_effect={d.region_effect} must be >= 0 (0 = regions leave the pixels alone)")
    names = [i.name for i in d.institutions]
    for k, inst in enumerate(d.institutions):
        if not inst.name or not inst.modality:
            raise ConfigError(
                f"data.institutions[{k}] needs a name and a modality, got name={inst.name!r} modality={inst.modality!r}"
            )
        if names.count(inst.name) > 1:
            raise ConfigError(f"data.institutions names {inst.name!r} twice; institution names must be unique")
        if len(set(inst.bands)) != len(inst.bands):
            raise ConfigError(f"data.institutions[{k}].bands={list(inst.bands)} lists a band twice")
    p = d.partition
    if p.institutions < 1:
        raise ConfigError(
            f"data.partition.institutions={p.institutions} must be >= 1 (institutions per modality; 1 = no partition)"
        )
    if p.method not in PARTITION_METHODS:
        raise ConfigError(f"data.partition.method={p.method!r} must be one of {', '.join(PARTITION_METHODS)}")
    if not p.alpha > 0:
        raise ConfigError(f"data.partition.alpha={p.alpha} must be > 0 (small = strong label skew, large = near IID)")
    if p.min_size < 0:
        raise ConfigError(f"data.partition.min_size={p.min_size} must be >= 0")
    if p.institutions > 1 and d.institutions:
        raise ConfigError(
            "data.partition.institutions > 1 splits the derived institutions' pools; with an explicit "
            "data.institutions list, list every institution there instead (or drop data.institutions)"
        )
    if d.per_band and d.institutions:
        raise ConfigError(
            "data.per_band derives one institution per band from data.modalities; with an explicit "
            "data.institutions list, give each band its own entry (bands=[B04]) instead"
        )
    if p.institutions > 1 and d.paired:
        raise ConfigError(
            "data.paired=true (the paired-data reference) cannot be partitioned; set data.partition.institutions=1"
        )


def num_rounds(cfg: Config) -> int:
    """R: given, or total epochs / L (which must divide evenly so R x L stays the budget)."""
    if cfg.fed.rounds > 0:
        return cfg.fed.rounds
    if cfg.train.epochs % cfg.fed.local_epochs:
        raise ConfigError(
            f"train.epochs={cfg.train.epochs} is not a multiple of fed.local_epochs={cfg.fed.local_epochs}; "
            "choose L dividing the total or set fed.rounds explicitly"
        )
    return cfg.train.epochs // cfg.fed.local_epochs


# Flower run-config keys (pyproject [tool.flwr.app.config]) -> schema paths.  The pyproject defaults
# are "keep the config's value" sentinels (KEEP), so experiment files stay in charge unless a key is
# given on the command line.
RUN_CONFIG_KEYS: dict[str, str] = {
    "local-epochs": "fed.local_epochs",
    "num-server-rounds": "fed.rounds",
    "total-epochs": "train.epochs",
    "strategy": "fed.strategy",
    "proximal-mu": "fed.proximal_mu",
    "weighting": "fed.weighting",
    "fraction-train": "fed.fraction_train",
    "min-nodes": "fed.min_nodes",
    "round-timeout": "fed.round_timeout",
    "seed": "seed",
    "device": "train.device",
    "num-threads": "train.num_threads",
    "data-root": "data.root",
    "resume": "fed.resume",
    "projection-sharing": "fed.projection_sharing",
    "handshake-timeout": "fed.handshake_timeout",
    "rejoin-timeout": "fed.rejoin_timeout",
    "error-detail": "fed.error_detail",
    "wire-dtype": "fed.wire_dtype",
    "tensorboard": "fed.tensorboard",
    "server-lr": "fed.server_lr",
    "server-momentum": "fed.server_momentum",
    "eta": "fed.eta",
    "tau": "fed.tau",
    "beta-1": "fed.beta_1",
    "beta-2": "fed.beta_2",
    "trim-beta": "fed.trim_beta",
}
KEEP: dict[str, Any] = {
    "local-epochs": 0,
    "num-server-rounds": 0,
    "total-epochs": 0,
    "min-nodes": 0,
    "round-timeout": 0,
    "handshake-timeout": 0,
    "rejoin-timeout": 0,
    "tensorboard": False,
    "fraction-train": 0,
    "proximal-mu": -1,
    "seed": -1,
    "num-threads": -1,
}


def run_config_overrides(run_config: Mapping[str, Any]) -> list[str]:
    """Translate Flower's flat run config into Hydra overrides (one place, used by both apps).

    ``experiment`` picks a Hydra experiment file, ``overrides`` carries any further Hydra overrides
    (space separated), ``modalities`` lists the institutions by partition id, and every key of
    :data:`RUN_CONFIG_KEYS` maps to one schema field; "" or the key's :data:`KEEP` value leaves the
    config's value as it is.
    """
    known = set(RUN_CONFIG_KEYS) | {"experiment", "overrides", "modalities", "output-dir"}
    unknown = sorted(set(run_config) - known)
    if unknown:
        raise ConfigError(f"unknown run-config key(s) {unknown}; known keys: {sorted(known)}")
    out: list[str] = []
    exp = str(run_config.get("experiment", "") or "")
    if exp:
        out.append(f"experiment={exp}")
    out.extend(str(run_config.get("overrides", "") or "").split())  # explicit keys below win over these
    for key, path in RUN_CONFIG_KEYS.items():
        if key not in run_config:
            continue
        value = run_config[key]
        if value is None or value == "" or (key in KEEP and value == KEEP[key]):
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        out.append(f"{path}={value}")
    mods = str(run_config.get("modalities", "") or "")
    if mods:
        out.append("data.modalities=[" + ",".join(m.strip() for m in mods.split(",") if m.strip()) + "]")
    return out


def from_run_config(run_config: Mapping[str, Any], output_dir: str | None = None) -> Config:
    """The flat Flower run config bridged into the typed schema."""
    return load_config(run_config_overrides(run_config), output_dir=output_dir)
