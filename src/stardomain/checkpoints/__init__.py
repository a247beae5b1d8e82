"""Checkpoints you can trust: safetensors + JSON metadata written atomically (:mod:`.store`), and the data
they were trained on rebuilt exactly from that metadata (:mod:`.provenance`)."""
