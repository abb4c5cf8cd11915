"""Energy-harvesting simulation of intermittent, energy-adaptive inference.

- ``harvester``: harvested power over time (constant, CSV trace files);
- ``traces``: bundled traces generated from documented models;
- ``capacitor``: the storage capacitor, integrated in closed form;
- ``simulator``: event-driven execution of an inference's atomic steps across power failures;
- ``strategies``: exit strategies compared on the same trace and inputs.

The exit decision is the stop rule of :mod:`freeml_keras.exits.stop_rule` (``StopRule``), which
the simulator takes as a ``StopDecider``.
"""

from __future__ import annotations

from freeml_keras.energy.capacitor import Capacitor, Evolution
from freeml_keras.energy.harvester import Constant, Harvester, Trace, TraceFormatError, load_trace
from freeml_keras.energy.simulator import (ExitContext, InferenceResult, Ledger, NeverCompletes,
                                           PowerSupply, Program, SimulationResult, Simulator, Step,
                                           StopDecider, periodic_arrivals)
from freeml_keras.energy.strategies import (ExitCosts, Strategy, StrategyReport, branches_energy,
                                            compare, gnet_anytime, gnet_energy, run_to_completion)
from freeml_keras.energy import traces

__all__ = ["Capacitor", "Evolution", "Constant", "Harvester", "Trace", "TraceFormatError",
           "load_trace", "ExitContext", "StopDecider", "InferenceResult", "Ledger",
           "NeverCompletes", "PowerSupply", "Program", "SimulationResult", "Simulator", "Step",
           "periodic_arrivals", "ExitCosts", "Strategy", "StrategyReport", "branches_energy",
           "compare", "gnet_anytime", "gnet_energy", "run_to_completion", "traces"]
