"""Admission: a bounded, prioritised line per model in front of the engines, fair between
tenants; 429 past it."""

from mistral_serve.admission.fairness import MIN_WEIGHT, TenantShare, Ticket
from mistral_serve.admission.queue import (
    BATCH_PRIORITY,
    Admission,
    AdmissionLimits,
    DrainRate,
    ModelQueue,
)

__all__ = [
    "BATCH_PRIORITY",
    "MIN_WEIGHT",
    "Admission",
    "AdmissionLimits",
    "DrainRate",
    "ModelQueue",
    "TenantShare",
    "Ticket",
]
