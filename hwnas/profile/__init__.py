"""Profiles: the on-disk format of a measured device (record, lookup table, whole nets), its reader
and writer, the drift reference, and the profiler that measures a space into one.

Layout of `profiles/<id>/`: device.json (the record, `ProfileRecord`), ops.parquet (the lookup
table), nets.parquet (whole networks), plan.json (the networks a run measures, for --resume).
"""

from __future__ import annotations

from hwnas.profile.drift import (
    MAX_DRIFT,
    REFERENCE,
    Drift,
    base_reference_ms,
    correct_drift,
    reference_arch,
    reference_item,
    time_with_reference,
)
from hwnas.profile.profiler import ProfileConfig, Profiler, default_profile_id
from hwnas.profile.reader import Profile
from hwnas.profile.record import (
    SCHEMA_VERSION,
    DriftReference,
    ProfileRecord,
    read_record,
    write_record,
)
from hwnas.profile.store import SCALED_COLUMNS, STAT_COLUMNS, ProfileWriter, read_parquet

__all__ = ["MAX_DRIFT", "REFERENCE", "SCALED_COLUMNS", "SCHEMA_VERSION", "STAT_COLUMNS", "Drift",
           "DriftReference", "Profile", "ProfileConfig", "ProfileRecord", "ProfileWriter",
           "Profiler", "base_reference_ms", "correct_drift", "default_profile_id",
           "read_parquet", "read_record", "reference_arch", "reference_item",
           "time_with_reference", "write_record"]
