"""ISO weeks as the report sees them: Monday 00:00 UTC to the next Monday, labelled `2026-W43`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta


@dataclass(frozen=True)
class ReportWeek:
    """One ISO week: `monday` is its first day; the week covers `[start, end)` in UTC."""

    monday: date

    def __post_init__(self) -> None:
        if self.monday.weekday() != 0:
            raise ValueError(f"a report week starts on a Monday, not on {self.monday:%A %Y-%m-%d}")

    @classmethod
    def from_partition_key(cls, key: str) -> ReportWeek:
        """The week of a Dagster weekly partition key (`2026-10-19`, its Monday)."""
        try:
            return cls(date.fromisoformat(key[:10]))
        except ValueError as error:
            raise ValueError(f"weekly partition key {key!r}: {error}") from None

    @classmethod
    def last_complete(cls, last_day: date) -> ReportWeek:
        """The latest week whose Sunday is on or before `last_day`."""
        sunday = last_day - timedelta(days=(last_day.weekday() + 1) % 7)
        return cls(sunday - timedelta(days=6))

    @classmethod
    def ended_by(cls, moment: datetime) -> ReportWeek:
        """The latest week whose end (next Monday 00:00 UTC) is at or before `moment`.

        A schedule tick on Monday 06:00 reports on the week that ended six hours earlier; a
        tick on any later day of the week still reports on that same week.
        """
        utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        # The last whole day before `moment` is always the day before its date.
        return cls.last_complete(utc.date() - timedelta(days=1))

    @property
    def label(self) -> str:
        """ISO week label, e.g. `2026-W43` (the folder name under reports/)."""
        year, week, _ = self.monday.isocalendar()
        return f"{year}-W{week:02d}"

    @property
    def start(self) -> datetime:
        return datetime.combine(self.monday, time(), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """Exclusive end: the next Monday 00:00 UTC (a 5-minute row stamped then closes Sunday)."""
        return self.start + timedelta(days=7)

    @property
    def previous(self) -> ReportWeek:
        return ReportWeek(self.monday - timedelta(days=7))

    def describe(self) -> str:
        """`2026-W43 (Mon 19 Oct – Sun 25 Oct 2026)` for titles."""
        sunday = self.monday + timedelta(days=6)
        return f"{self.label} (Mon {self.monday:%d %b} – Sun {sunday:%d %b %Y})"
