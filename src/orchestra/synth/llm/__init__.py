"""orchestra.synth.llm: LLM-driven synthesis of τ²-format domains over any `ChatBackend` (see `pipeline`)."""

from orchestra.synth.llm.items import Model
from orchestra.synth.llm.pipeline import SynthResult, SynthSettings, synthesize_llm

__all__ = ["Model", "SynthResult", "SynthSettings", "synthesize_llm"]
