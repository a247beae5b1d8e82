"""Star-domain Bayesian model averaging against a deep ensemble, and model fusion (paper Sec. 4).

:mod:`.core` samples the star domain and scores the posterior; :mod:`.metrics` holds the
predictive-uncertainty metrics (ECE, NLL, and the AUROC of misclassification detection) it is scored with;
:mod:`.bootstrap` gives each point of a curve its 95% interval over the test samples.
"""
