"""The schema: one dataclass per section, every field with its meaning and range.

Registered in Hydra's ConfigStore as ``base_config``; the YAML groups under ``configs/`` only override
its fields.  The defaults are the paper's Table 7 where it has one (the embedded CPU-scale schedule is
``configs/train/default.yaml``).  The allowed values of every choice are in :mod:`.validation`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SPLIT_SIZE_KEYS = ("train_per_class", "val_per_class", "test_per_class")


@dataclass
class InstitutionConfig:
    name: str = ""  # unique institution name; a deployed node's config names it (node config `institution`)
    modality: str = ""  # its projection group: institutions of one modality hold the same bands
    sensor: str = ""  # the source's sensor key whose files it reads; "" = modality
    bands: list[str] = field(default_factory=list)  # its bands in order; empty = data.bands.<sensor> or all
    root: str = ""  # its dataset root (real sources); "" = data.root


@dataclass
class PartitionConfig:
    institutions: int = 1  # institutions per modality, >= 1: its pool split into <modality>_<i>; 1 = none
    method: str = "iid"  # iid (equal parts) | dirichlet (label skew, alpha) | natural (by the column)
    alpha: float = 0.5  # dirichlet concentration, > 0: small = each institution dominated by few classes
    # natural: the scene metadata to split by (synthetic region | bigearthnet_v2 country |
    # bigearthnet_v1 tile | sen12ms roi)
    column: str = "region"
    min_size: int = 0  # every part holds at least this many samples, >= 0 (dirichlet redraws, 10 tries)


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | bigearthnet_v1 | bigearthnet_v2 | sen12ms | eurosat | folder
    root: str | None = None  # dataset root on disk (real sources only); absolute path
    cache_dir: str | None = None  # decode-once cache (real sources); default <root>/.uml_fed_cache
    modalities: list[str] = field(default_factory=lambda: ["s1", "s2"])  # sensors, one institution each
    bands: dict[str, list[str]] = field(default_factory=dict)  # band names per modality; empty = all
    per_band: bool = False  # each band of each listed sensor becomes its own institution (paper Exp. 1)
    classes: list[str] = field(default_factory=list)  # class names; empty = the source's default list
    train_per_class: int = 100  # training samples per class and institution (paper low-data: 100)
    val_per_class: int = 30  # validation samples per class and institution
    test_per_class: int = 50  # test samples per class and institution
    # per institution (or partitioned modality's pool), e.g. +data.sizes.s1.train_per_class=20
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    # explicit institutions; empty = derived from data.modalities (and data.partition)
    institutions: list[InstitutionConfig] = field(default_factory=list)
    partition: PartitionConfig = field(default_factory=PartitionConfig)  # split pools among institutions
    patch_size: int = 32  # synthetic patch side in pixels (BigEarthNet 120, SEN12MS 256, EuroSAT 64)
    paired: bool = False  # real archives: give all institutions the SAME scenes (paired reference only)
    normalization: str = "train"  # train = per-band stats of the institution's own train split | published
    season: str = "summer"  # SEN12MS season filter: spring | summer | fall | winter
    skip_unreadable: bool = False  # real sources: skip unreadable patches with a warning (counted)
    constant_bands: str = "error"  # a band constant over a train split: error | warn (kept, unscaled)
    resize: int = 0  # real sources: resample every patch to this side in pixels, >= 0; 0 = native size
    short_class: str = "raise"  # real sources, class too small for the sizes: raise | shrink | drop
    igbp_scheme: str = "full"  # SEN12MS labels: full = 17 IGBP classes (the paper's 7) | simplified = 10
    snr_scale: float = 1.0  # synthetic: multiplies the optical sensor noise (1 = nominal Sentinel-2)
    enl: float = 4.4  # synthetic: equivalent number of looks of the SAR speckle (Sentinel-1 IW GRD ~4.4)
    mixing: float = 0.35  # synthetic: mean fraction of a scene covered by non-dominant covers (0..0.6)
    # synthetic: strength of the regions' phenology/soil shift, >= 0; None = 1 for partitioned pools, else 0
    region_effect: float | None = None

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
    width: int = 16  # channels of the first ResNet stage, >= 1 (64 = the paper's ResNet-18)
    projection_blocks: int = 2  # basic blocks in each private projection f_k, 0..8 (paper: 2)
    stem: str = "small"  # small = 3x3 stride-1 conv (patches <= 64 px) | large = 7x7 stride-2 + max-pool
    track_running_stats: bool = False  # False = static BN (paper) | True = running-average BN (ablation)
    # > 0: each modality's own bias-free linear map of its pooled embedding to this many shared components
    # before the shared classifier (ISCA); needs projection_blocks=8, at most 8 x width; 0 = no map
    shared_components: int = 0
    # True = each modality / institution keeps its own linear classifier, never shared (FedPer, Arivazhagan
    # et al. 2019): the shared part is the backbone's blocks only
    private_head: bool = False
    # tau >= 0: logits + tau * log(own training label frequencies, Laplace-smoothed) in training and
    # inference (logit adjustment, Menon et al. 2021; FedLC, Zhang et al. 2022): a shared classifier learns
    # the prior-free part and each institution adds its own prior, private state like its projection; 0 = off
    logit_adjust: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 200  # total training epochs, >= 1 (federated: R x L)
    batch_size: int = 32  # mini-batch size b per modality and step, >= 1
    # largest = every model of the run (UML, baselines, federated clients) takes the run's largest
    # institution's full batches per epoch (equal steps) | own = each model its own data's
    steps_per_epoch: str = "largest"
    lr: float = 1e-3  # AdamW initial learning rate, > 0
    weight_decay: float = 0.01  # AdamW weight decay, >= 0
    lr_step: int = 150  # StepLR step size in epochs, >= 1
    lr_gamma: float = 0.1  # StepLR decay factor, in (0, 1]
    select_after: int = 190  # model selection: best val accuracy among epochs > select_after (0-based)
    eval_batch_size: int = 600  # batch size for validation/test forward passes, >= 1
    bn_cal_epochs: int = 10  # Algorithm 2: calibration epochs E_cal, >= 0
    bn_cal_batch_size: int = 600  # Algorithm 2: calibration batch size B, >= 1
    # Algorithm 2's data: own = the institution's training split | balanced = a seeded resample of it of the
    # same size with every class present in it (nearly) equally often (BN statistics without the local label skew)
    bn_cal_sample: str = "own"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # torch intra-op threads, >= 0; 0 = what the process was given (torch / Ray)
    # fp32 | bf16 (autocast) | auto = bf16 on a GPU that supports it or a CPU with native bf16
    # (AVX512-BF16, AMX), else fp32
    precision: str = "auto"
    channels_last: str = "auto"  # on | off | auto = on (NHWC: faster on GPUs and on the CPUs measured)
    compile: str = "off"  # torch.compile projections and backbone: off | default | reduce-overhead | max-autotune
    run_unimodal: bool = True  # centralized command: also train the unimodal baselines for comparison
    pool_institutions: bool = False  # centralized: one projection per sensor over its institutions' data
    # unimodal baseline + paired reference: ordinary = running stats, no calibration (Table 7) |
    # calibrated = static BN + Algorithm 2
    unimodal_bn: str = "ordinary"
    # UML models, after training and before Algorithm 2: each institution trains a copy of its selected
    # model's head (the classifier) or last_block (the last backbone block + classifier; with ordinary BN
    # also that block's running statistics), everything else frozen, for finetune_epochs epochs on its own
    # training split at the schedule's last learning rate | none
    finetune: str = "none"
    finetune_epochs: int = 5  # >= 1
    # every institution's reported model also evaluated on the test split of every other institution of
    # its modality (federated: an extra round in which the models travel to their peers for evaluation)
    cross_site: bool = False
    progress: bool = True  # show progress bars


@dataclass
class FedConfig:
    local_epochs: int = 5  # L: local epochs per round, >= 1
    rounds: int = 0  # R, >= 0; 0 = train.epochs // local_epochs
    strategy: str = "fedavg"  # fedavg | fedprox | fedavgm | fedadam | fedyogi | fedadagrad | fedmedian | fedtrimmedavg
    proximal_mu: float = 0.0  # FedProx mu, >= 0 (> 0 adds mu/2 ||theta - theta_global||^2 on the backbone)
    # FedAvgM: server learning rate, > 0; with server_momentum 0.9 the steady-state step equals FedAvg's
    # (0.1 / (1 - 0.9) = 1; Hsu et al. 2019)
    server_lr: float = 0.1
    server_momentum: float = 0.9  # FedAvgM: server momentum, in [0, 1) (0 with server_lr 1 is FedAvg)
    # FedAdam/FedYogi/FedAdagrad: server learning rate, > 0; 0.01 moves the backbone 0.4x/0.6x/1.3x FedAvg's
    # round-1 step (scripts/strategy_scale.py; Flower's 0.1: 4x/6x/13x)
    eta: float = 0.01
    tau: float = 1e-3  # FedAdam/FedYogi/FedAdagrad: adaptivity, > 0 (added to sqrt(v) in the denominator)
    beta_1: float = 0.9  # FedAdam/FedYogi: first-moment decay, in [0, 1)
    beta_2: float = 0.99  # FedAdam/FedYogi: second-moment decay, in [0, 1)
    trim_beta: float = 0.2  # FedTrimmedAvg: fraction of institutions cut at each end per coordinate, in [0, 0.5)
    weighting: str = "uniform"  # uniform = 1/K (paper) | num_examples (Flower's default) | modality = 1/M per sensor
    projection_sharing: str = "none"  # none = projections private (paper) | modality = averaged within a sensor
    keep_optimizer_state: bool = True  # clients keep AdamW moments across rounds (in their private state)
    # each institution also trains its own unimodal baseline in the final round (same budget, steps and
    # selection; never sent), and the summary shows its gain; false saves that time
    local_baseline: bool = True
    fraction_train: float = 1.0  # fraction of institutions sampled per round (seeded), in (0, 1]
    min_nodes: int = 0  # 0 = every institution in every round (a lost one is waited for); N = go on with >= N
    handshake_timeout: float = 120.0  # seconds to wait for every institution to connect and describe itself
    round_timeout: float = 3600.0  # seconds to wait for a round's replies; x (R + 1) for the own baselines' round
    rejoin_timeout: float = 600.0  # min_nodes=0: seconds to wait for a lost institution, then the run fails
    poll_interval: float = 0.1  # seconds between the server's pulls for replies
    error_detail: str = "auto"  # what a failing client tells the server: full | type | auto = type when deployed
    tensorboard: bool = False  # per-round metrics to <run>/tensorboard (needs the tensorboard extra)
    wire_dtype: str = "float32"  # backbone arrays on the wire: float32 | float16 (aggregation stays float32)
    sweep_local_epochs: list[int] = field(default_factory=lambda: [2, 5, 10, 25, 50])  # L values of a sweep
    client_cpus: int = 1  # Ray simulation: CPUs per client (whole CPUs)
    client_gpus: float = 0.0  # Ray simulation: GPUs per client (fractions share a GPU)
    resume: bool = False  # continue an interrupted run from its output-dir's server_state.pt


@dataclass
class MethodConfig:
    # uml (the paper) | dann | cdan | mcc | mdd | margin_disparity | isca | isca_e2e (configs/method/)
    name: str = "uml"
    # The baselines' coefficients (uml uses none). Defaults: the original papers / reference code.
    align_weight: float = 1.0  # weight of the alignment term added to the mean CE, >= 0 (tllib: 1.0)
    grl_max: float = 1.0  # final gradient-reversal coefficient, >= 0 (DANN paper, tllib: 1; margin disparity: 0.1)
    grl_gamma: float = 10.0  # GRL ramp grl_max (2 / (1 + exp(-grl_gamma p)) - 1) over progress p, >= 0 (DANN: 10)
    disc_hidden: int = 1024  # DANN/CDAN: hidden width of the modality discriminator, >= 1 (tllib: 1024)
    cdan_entropy: bool = False  # CDAN: True = CDAN+E entropy weighting (the paper's row names plain CDAN)
    cdan_randomized_dim: int = 1024  # CDAN: randomized map size above 4096 inputs, >= 1 (Long et al.: 1024)
    mcc_temperature: float = 2.5  # MCC: softmax temperature, > 0 (Jin et al. 2020, tllib: 2.5)
    density_weight: float = 0.01  # MDD: alpha, weight of L_mdd, >= 0 (Li et al. 2020: best at 0.01)
    disparity_margin: float = 4.0  # margin disparity discrepancy: margin gamma, > 0 (Zhang et al. 2019: 4)
    isca_whiten_weight: float = 1.0  # ISCA (both variants): whitening penalty weight per modality, >= 0 (1.0)
    isca_cls_weight: float = 0.1  # ISCA: cross-entropy weight lambda_cls, >= 0 (ISCA scripts: 0.1)
    isca_mcc_weight: float = 0.1  # ISCA: weight of the MCC term, >= 0 (ISCA code: 0.1; 0 = plain SCA)
    isca_mcc_temperature: float = 0.55  # ISCA: MCC temperature, > 0 (ISCA scripts: 0.55)
    isca_map_lr: float = 2e-4  # ISCA: Adam learning rate of the linear maps, > 0 (ISCA scripts: 2e-4)
    isca_disc_lr: float = 2e-5  # ISCA: Adam learning rate of the discriminator, > 0 (ISCA scripts: 2e-5)
    isca_cls_lr: float = 4e-4  # ISCA: classifier's initial Adam lr, > 0, x (1 + 0.001 t)^-0.75 (ISCA code)
    isca_iterations: int = 1250  # ISCA: alternating iterations, >= 1 (ISCA code: 10 epochs x 125)
    isca_epochs: int = 10  # ISCA: epochs the iterations are cut into for the label-noise decay, >= 1
    isca_batch_size: int = 64  # ISCA: embeddings per modality and iteration, >= 2 (ISCA scripts: 64)
    isca_label_noise: float = 0.2  # ISCA: width of the discriminator labels' noise at epoch 0, in [0, 0.5)
    isca_eval_every: int = 10  # ISCA: iterations between validations for model selection, >= 1


@dataclass
class RunnerConfig:
    # `uml-fed experiment`: seeds of every arm (5: one or three seeds cannot carry an effect of a few points)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    # torch threads of every run, >= 1: pinned and part of the run's identity (the numbers depend on it)
    threads: int = 1
    root: str = "outputs/experiments"  # runs (runs/) and reports (<experiment>/<variant>/); relative = cwd
    report_root: str = ""  # where reports go instead (e.g. docs/results); "" = root; runs stay under root
    scale: str = "cpu"  # cpu = embedded synthetic data, CPU-sized model | paper = a real archive, Table 7
    dataset: str = "bigearthnet"  # paper scale: bigearthnet | sen12ms | eurosat_s1_rgb (experiment presets)
    # runs at once, each in its own process, >= 1 (2 single-thread runs use both cores of a 2-core
    # machine; a federated run trains its institutions in parallel)
    parallel: int = 1


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
    ConfigStore.instance().store(name="base_config", node=Config)


register_configs()
