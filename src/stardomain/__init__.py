"""stardomain: test the star domain conjecture (Sonthalia et al.) on real networks.

Pipeline: data -> models -> train -> permute -> interpolate/barrier -> starlight -> bma -> experiment/report.
"""

__version__ = "0.1.0"

from stardomain.errors import StardomainError

__all__ = ["StardomainError", "__version__"]
