"""Execution algorithms' schedules (TWAP, VWAP, iceberg) and their progress: pure functions, Decimal quantities,
integer epoch ms. The actor that runs them (sending children, resuming after a restart) builds on these."""

from domain.algos.iceberg import iceberg_clip, iceberg_clips
from domain.algos.progress import Leftover, carry, due, remaining_after
from domain.algos.schedule import MAX_DURATION_MS, MAX_SLICES, AlgoParamError, Slice
from domain.algos.twap import twap_schedule
from domain.algos.vwap import MarketVolume, RecentProfile, recent_profile, vwap_schedule

__all__ = [
    "MAX_DURATION_MS",
    "MAX_SLICES",
    "AlgoParamError",
    "Leftover",
    "MarketVolume",
    "RecentProfile",
    "Slice",
    "carry",
    "due",
    "iceberg_clip",
    "iceberg_clips",
    "recent_profile",
    "remaining_after",
    "twap_schedule",
    "vwap_schedule",
]
