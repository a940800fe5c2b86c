"""The documentation that is generated from the code is current: the config reference (docs/configuration.md)."""

from __future__ import annotations

from jaxrl_dist.config import reference


def test_config_reference_is_current() -> None:
    """docs/configuration.md is what `python -m jaxrl_dist.config.reference` writes from the schema's field docs;
    after a change to a field, rerun that command."""
    assert reference.PAGE.is_file(), "docs/configuration.md is missing: run python -m jaxrl_dist.config.reference"
    assert reference.PAGE.read_text() == reference.render(), (
        "docs/configuration.md is stale: run python -m jaxrl_dist.config.reference")


def test_every_field_is_documented() -> None:
    rows = [line for line in reference.render().splitlines() if line.startswith("| `")]
    assert rows and all(not line.rstrip().endswith("|  |") for line in rows), [r for r in rows if r.endswith("|  |")]
