"""Every scenario under scenarios/: start the stack with its config, play its steps.

Each runs twice: Envoy on State-of-the-World ADS (what istio-agent uses) and on delta ADS.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import Runner, discover, load

SCENARIOS = discover(Path(__file__).resolve().parent / "scenarios")
VARIANTS = ("sotw", "delta")


@pytest.mark.parametrize("xds_variant", VARIANTS)
@pytest.mark.parametrize("scenario_dir", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario(scenario_dir: Path, xds_variant: str, make_stack) -> None:
    scenario = load(scenario_dir)
    stack = make_stack(
        backends=scenario.backends,
        gateway_labels=scenario.gateway_labels,
        extra_ports=scenario.extra_ports,
        xds_variant=xds_variant,
    )
    stack.load_config_dir(scenario.config_dir)
    stack.start(ready_timeout=scenario.ready_timeout)
    Runner(scenario, stack).run()
