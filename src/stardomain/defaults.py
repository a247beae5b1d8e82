"""Defaults named once: every front end (CLI options, YAML dataclasses, Python signatures) reads them from here.

A module of plain constants, importable without torch, so the CLI's option table costs no import time.
"""

DEFAULT_POINTS = 21  # values of t on a path: the paper's grid 0, 0.05, ..., 1
DEFAULT_MATCHING_SAMPLES = 1024  # training inputs activation matching correlates on (seeded, every class)

# learned matching (permute.learned, Git Re-Basin's straight-through estimator): its budget
REFINE_STEPS = 100  # Adam steps on the proxy
REFINE_BATCH_SIZE = 128  # training samples per step
REFINE_LR = 1e-3  # Adam's learning rate
REFINE_EVAL_SAMPLES = 1024  # held-out training samples every projection's midpoint loss is scored on

# Algorithm 1's knobs, the paper's choices: StarlightConfig and the YAML star block both default to these
T_SAMPLING = "uniform"  # t ~ U[0, 1]
T_BETA = (1.0, 1.0)  # Beta(a, b) of t_sampling: beta
T_CONSTANT = 0.5  # the fixed t of t_sampling: constant
PAIRS_PER_STEP = 1  # one (source, t) pair per step
MU = 0.0  # no fusion term (Eq. 9 sets mu > 0)
MATCHING = "weight"  # sources re-aligned by weight matching
