"""Star-domain Bayesian model averaging against a deep ensemble, and model fusion (paper Sec. 4).

:mod:`.core` samples the star domain and scores the posterior; :mod:`.metrics` holds the
predictive-uncertainty metrics (ECE, AUROC, NLL) it is scored with.
"""
