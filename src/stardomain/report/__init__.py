"""report.md and the figures, written from results.json alone (:mod:`.markdown` is the entry point;
each study's section comes from its :class:`~stardomain.experiment.study.Study`)."""
