"""orchestra.synth: training-data synthesis (per-example preferences and prices; ToolScale-style domains)."""

from orchestra.synth.preferences import (
    Candidate,
    PreferenceDistribution,
    PreferenceSample,
    candidates_from,
    sample_for_example,
    sample_preference,
)

__all__ = [
    "Candidate", "PreferenceDistribution", "PreferenceSample", "candidates_from", "sample_for_example",
    "sample_preference",
]
