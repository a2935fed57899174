"""Admission: a bounded, prioritised line per model in front of the engines; 429 past it."""

from mistral_serve.admission.queue import Admission, AdmissionLimits, DrainRate, ModelQueue

__all__ = ["Admission", "AdmissionLimits", "DrainRate", "ModelQueue"]
