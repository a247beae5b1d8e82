"""From numbers to claims: statistics with n and spread (:mod:`.stats`), convergence of a zoo
(:mod:`.convergence`), the test behind each verdict (:mod:`.verdicts`), and the authors' published figures."""
