"""`uml-fed` console command.

    uml-fed centralized [hydra overrides]      Algorithm 1 + BN calibration (+ unimodal baselines)
    uml-fed unimodal [hydra overrides]         the unimodal baselines only
    uml-fed federated [--run-config "k=v ..."] [--federation-config "k=v ..."]
                                               a federated simulation (flwr run); exit 1 when the run failed
    uml-fed sweep [overrides]                  = uml-fed experiment fig4: R x L schedules + references
    uml-fed experiment NAME [overrides]        a paper table/figure over seeds (--list: the experiments)
    uml-fed prepare-data [hydra overrides]     decode a real archive once into the per-institution cache
    uml-fed predict CHECKPOINT IMAGE...        unimodal inference with a saved calibrated checkpoint
    uml-fed map CHECKPOINT SCENE... --out MAP.tif
                                               a whole scene classified into a georeferenced map (--help)
    uml-fed scene OUT.tif --modality s2 --size 2048 --labels LABELS.tif
                                               a synthetic scene with known land cover, to map and score

Hydra overrides and ``--multirun`` work as usual, e.g.
``uml-fed centralized seed=1 model.width=32`` or ``uml-fed centralized --multirun seed=0,1,2``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

USAGE = __doc__


def _writable(key: str, folder: str) -> None:
    """Refuse a run directory that cannot be created or written, naming it (before Hydra tries): the
    folder up to its first interpolation is made and a file written and removed there."""
    import tempfile
    from pathlib import Path

    from .config import ConfigError

    path = Path(folder.split("${", 1)[0] or ".").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=path).close()
    except OSError as e:
        raise ConfigError(
            f"{key}={folder}: cannot write to {path} ({e.strerror or e}); choose a folder you can write to"
        ) from None


def precheck(argv: list[str]) -> None:
    """The command line composed as the command will compose it, so that a config error is one line
    (exit 2) before Hydra starts; for ``--multirun`` the first value of each sweep."""
    from .config import load_config

    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = []
    for a in argv:
        if a.startswith("-") or "=" not in a or a.split("=", 1)[0].lstrip("+~").startswith(("hydra.", "hydra/")):
            continue
        key, value = a.split("=", 1)
        if multirun and "," in value and not value.startswith(("[", "{")):
            value = value.split(",", 1)[0]
        overrides.append(f"{key}={value}")
    load_config(overrides)
    run_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = next((a.split("=", 1)[1] for a in argv if a.startswith(f"{run_key}=")), None)
    _writable(run_key, given or ("multirun" if multirun else "outputs"))


def _hydra_command(fn: Callable[[object], None]) -> Callable[[], None]:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from .config import config_dir, to_config

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def _main(cfg) -> None:  # type: ignore[no-untyped-def]
        cfg.output_dir = HydraConfig.get().runtime.output_dir
        with user_errors(sys.argv[0]):
            fn(to_config(cfg))

    return _main


@contextmanager
def user_errors(command: str) -> Iterator[None]:
    """A config, data or missing-file error ends the command with ONE line (the key or file and the
    remedy are in the message) and exit code 2, not a traceback; anything else is a bug: traceback."""
    from .config import ConfigError
    from .data import DataError
    from .federated.federation import RunFailed
    from .results import ArtifactError

    try:
        yield
    except (ConfigError, DataError, FileNotFoundError, RunFailed, ArtifactError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"{command}: error: {first}", file=sys.stderr)
        raise SystemExit(2) from None


def _centralized(cfg) -> None:  # type: ignore[no-untyped-def]
    from .centralized import print_summary, run_centralized

    results = run_centralized(cfg)
    print_summary(results, cfg.output_dir)


def _unimodal(cfg) -> None:  # type: ignore[no-untyped-def]
    from .centralized import print_summary, run_unimodal

    results = run_unimodal(cfg)
    print_summary(results, cfg.output_dir)


def _prepare_data(cfg) -> None:  # type: ignore[no-untyped-def]
    from .data.prepare import prepare_data

    prepare_data(cfg)


def _federated(argv: list[str]) -> None:
    """``flwr run . --stream`` for scripts: exit 0 only when the run finished (Flower's CLI exits 0 on a
    failed run); a failed run's one-line reason is the last line printed, exit 1."""
    import argparse

    from flwr.common.config import parse_config_args

    from .experiments.launch import FederatedRunFailed, run_federated_job

    parser = argparse.ArgumentParser(prog="uml-fed federated", description=_federated.__doc__)
    parser.add_argument("--run-config", default="", help="as for flwr run: 'k=v ...' or a .toml file")
    parser.add_argument("--federation-config", default="", help="as for flwr run, e.g. 'num-supernodes=4'")
    args = parser.parse_args(argv)
    run_config = parse_config_args([args.run_config]) if args.run_config else {}
    federation = parse_config_args([args.federation_config]) if args.federation_config else {}
    try:
        results = run_federated_job(run_config, federation, stream_to=sys.stdout)
    except FederatedRunFailed as e:
        print(f"uml-fed federated: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"uml-fed federated: finished, results in {results['run_dir']}")


def _experiment(argv: list[str]) -> None:
    from .experiments import EXPERIMENTS, run_experiment

    if not argv or argv[0] in ("-h", "--help", "--list"):
        for e in EXPERIMENTS.values():
            print(f"{e.name:<18} {e.paper:<10} {e.question}")
        return
    run_experiment(argv[0], argv[1:])


COMMANDS: dict[str, Callable[[object], None]] = {
    "centralized": _centralized,
    "unimodal": _unimodal,
    "prepare-data": _prepare_data,
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    if cmd == "sweep":  # the R x L sweep is the Figure 4 experiment
        cmd, rest = "experiment", ["fig4", *rest]
    if cmd in ("experiment", "federated"):
        with user_errors(f"uml-fed {cmd}"):
            (_experiment if cmd == "experiment" else _federated)(rest)
        return
    if cmd in ("predict", "map", "scene"):
        from .mapping.command import map_main, scene_main
        from .predict import main as predict_main

        with user_errors(f"uml-fed {cmd}"):
            {"predict": predict_main, "map": map_main, "scene": scene_main}[cmd](rest)
        return
    if cmd not in COMMANDS:
        print(f"uml-fed: unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    with user_errors(f"uml-fed {cmd}"):
        precheck(rest)
    sys.argv = [f"uml-fed {cmd}", *rest]
    _hydra_command(COMMANDS[cmd])()


if __name__ == "__main__":
    main()
