"""The matchers are named once (``defaults.MATCHERS``, issue 34): the CLI's choices, the YAML checks and the API's
errors all list exactly the registry's names, in its order, and ``align`` dispatches on the same names."""

from __future__ import annotations

import re

import pytest

from stardomain import defaults
from stardomain.barrier.pair import evaluate_pair
from stardomain.cli.app import cli
from stardomain.errors import StardomainError
from stardomain.experiment.config_blocks import EvalConfig, StarConfig
from stardomain.permute import align
from stardomain.permute.align import MATCHER_FUNCTIONS
from stardomain.starlight.config import StarlightConfig

MATCHERS = tuple(defaults.MATCHERS)
ALIGNMENTS = (*MATCHERS, "none")


def _listed(message: str) -> tuple[str, ...]:
    """The names a one-line refusal lists after 'one of' (up to the parenthesis or the end)."""
    found = re.search(r"one of ([\w, ]+?)(?: \(|$)", message)
    assert found, message
    return tuple(found.group(1).split(", "))


def _choices(command: str, option: str) -> tuple[str, ...]:
    import stardomain.cli.pairs_cmd  # noqa: F401  (registers the commands)
    import stardomain.cli.star_cmd  # noqa: F401

    (param,) = [p for p in cli.commands[command].params if option in p.opts]
    return tuple(param.type.choices)  # type: ignore[attr-defined]


def test_the_registry_is_an_ordered_mapping_of_one_line_descriptions():
    assert MATCHERS == ("weight", "activation")
    assert defaults.ALIGNMENTS == ALIGNMENTS and defaults.NO_ALIGNMENT == "none"
    assert defaults.MATCHING in MATCHERS
    for about in defaults.MATCHERS.values():
        assert about and "\n" not in about
    with pytest.raises(TypeError):
        defaults.MATCHERS["magic"] = "read-only"  # type: ignore[index]


def test_align_dispatches_on_the_registry_names():
    assert tuple(MATCHER_FUNCTIONS) == MATCHERS


def test_cli_choices_are_the_registry():
    assert _choices("align", "--method") == MATCHERS
    assert _choices("barrier", "--align") == ALIGNMENTS
    assert _choices("star", "--matching") == ALIGNMENTS


def test_cli_help_describes_every_matcher():
    import stardomain.cli.star_cmd  # noqa: F401

    (param,) = [p for p in cli.commands["star"].params if "--matching" in p.opts]
    for name, about in defaults.MATCHERS.items():
        assert f"{name}: {about}" in (param.help or "")


def test_yaml_checks_list_the_registry():
    with pytest.raises(StardomainError, match=r"^eval\.align") as e:
        EvalConfig(align="magic")
    assert _listed(str(e.value)) == ALIGNMENTS
    with pytest.raises(StardomainError, match=r"^star\.matching") as e:
        StarConfig(matching="magic")
    assert _listed(str(e.value)) == ALIGNMENTS
    with pytest.raises(StardomainError, match="matching") as e:
        StarlightConfig(matching="magic")
    assert _listed(str(e.value)) == ALIGNMENTS


def test_api_errors_list_the_registry():
    with pytest.raises(StardomainError, match="unknown alignment method 'magic'") as e:
        align({}, {}, method="magic")
    assert _listed(str(e.value)) == MATCHERS
    with pytest.raises(StardomainError, match="align must be one of") as e:
        evaluate_pair({}, {}, model=None, dataset=None, align="magic")  # type: ignore[arg-type]
    assert _listed(str(e.value)) == ALIGNMENTS
