"""A simulated LLM API on loopback (OpenAI chat completions and Azure, Anthropic Messages, Gemini generateContent),
scriptable while it runs: a real threaded HTTP/1.1 server (`Simulator`, `serve()` for `fpwatch simulate`) that
also answers in-process (`Simulator.respond()`), driven by a scenario of per-model fingerprints, answer
distributions, latency, phases and faults, plus helpers that build the temperature-0 noise and the model changes
fpwatch must detect; the scenario format, routes, faults and admin endpoints are documented in
`fpwatch/sim/scenario.py`.
"""

from fpwatch.sim.changes import (
    BORDER_PROMPTS,
    BUILTIN_PROMPTS,
    perturbed_logprobs,
    realistic,
    routed,
    shifted,
    with_fingerprints,
)
from fpwatch.sim.scenario import load_scenario, validate_scenario
from fpwatch.sim.server import Simulator, serve

__all__ = [
    "BORDER_PROMPTS",
    "BUILTIN_PROMPTS",
    "Simulator",
    "load_scenario",
    "perturbed_logprobs",
    "realistic",
    "routed",
    "serve",
    "shifted",
    "validate_scenario",
    "with_fingerprints",
]
