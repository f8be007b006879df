"""The paper's tables and figures as experiments (:mod:`.definitions`), run over seeds (:mod:`.experiment`,
one run per arm and seed: :mod:`.runner`; federated runs through :mod:`.launch`) and reported from the
stored runs (:mod:`.report`)."""

from .definitions import EXPERIMENTS
from .experiment import run_experiment

__all__ = ["EXPERIMENTS", "run_experiment"]
