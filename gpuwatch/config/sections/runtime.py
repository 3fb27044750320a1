"""Settings of how gpuwatch runs and what it leaves behind: the cycle's output and
state, its own metrics, the weekly report's location and look, and the daemon's schedule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from gpuwatch.config.sections.base import DurationS, Section, known_time_zone, secret


class OutputSettings(Section):
    """What a cycle prints and where it writes files."""

    format: Literal["table", "json"] = Field(
        "table", description="What goes to standard output: `table` for people, `json` for tools."
    )
    dir: Path = Field(
        Path("gpuwatch-out"),
        description="Folder for the cycle's JSON result (and, unless `state.path` says "
        "otherwise, its state file). Created when missing.",
    )


class StateSettings(Section):
    """What persists between cycles: when each finding started firing, and what each
    channel was told (so that a CronJob every 5 minutes does not repeat itself)."""

    backend: Literal["file", "configmap", "memory"] = Field(
        "file",
        description="`file`: a JSON file (`state.path`); `configmap`: a ConfigMap "
        "(`state.configmap`), for a CronJob without a volume; `memory`: none kept, every "
        "run starts afresh (the demo).",
    )
    path: Path | None = Field(
        None, description="JSON state file. Unset: `state.json` in `output.dir`."
    )
    configmap: str = Field(
        "gpuwatch/gpuwatch-state",
        pattern=r"^[a-z0-9-]+/[a-z0-9.-]+$",
        description="`namespace/name` of the state ConfigMap (created when missing). "
        "Written with optimistic concurrency: a second writer is refused, not overwritten.",
    )


class SelfMetricsSettings(Section):
    """gpuwatch's own metrics (findings, costs, savings, actions, cycle time, deliveries)."""

    pushgateway_url: str | None = Field(
        None,
        description="Pushgateway to push to after each cycle (CronJob mode). Unset: no push.",
        json_schema_extra=secret("url"),
    )
    job: str = Field("gpuwatch", min_length=1, description="Pushgateway job label.")
    address: str = Field(
        "0.0.0.0", description="Daemon mode: address `/metrics` and `/healthz` listen on."
    )
    port: int = Field(9400, ge=1, le=65535, description="Daemon mode: port for `/metrics`.")


class ReportSettings(Section):
    """The weekly report: Parquet tables and one self-contained HTML file."""

    location: str = Field(
        "gpuwatch-reports",
        description="Where the dataset and the HTML go: a local folder, or a URI that "
        "pyarrow opens (`s3://bucket/prefix`, `gs://bucket/prefix`; Alibaba OSS and MinIO "
        "through `s3://` with `s3_endpoint_url`). Credentials come from the usual "
        "environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, instance roles).",
        json_schema_extra=secret("url"),
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint, e.g. `https://oss-cn-hangzhou.aliyuncs.com`.",
        json_schema_extra=secret("url"),
    )
    s3_region: str | None = Field(None, description="S3 region; unset: the SDK's default.")
    templates: Path | None = Field(
        None,
        description="Folder holding `weekly.html.j2` (and what it includes), to change the "
        "report's look. Unset: the shipped `reports/` templates.",
    )
    heatmap_max_rows: int = Field(
        240,
        ge=8,
        le=2000,
        description="Rows of the utilization heatmap. A larger fleet is drawn a row per "
        "group of GPUs (same pool and node, in order), each the mean of its GPUs.",
    )
    slack_channel: str | None = Field(
        None,
        description="Where the weekly summary and the HTML go when Slack is configured. "
        "Unset: `notify.channel`.",
    )
    trend_weeks: int = Field(
        8,
        ge=1,
        le=104,
        description="Weeks of each team's cost and utilization the report shows, this one "
        "included, read from the dataset (weeks never written are left out).",
    )


class DaemonSettings(Section):
    """`gpuwatch run`: the long-lived process that schedules cycles and reports itself
    (the alternative to the two CronJobs)."""

    interval_s: DurationS = Field(
        300,
        alias="interval",
        ge=1,
        description="Time between cycles. A cycle still running when the next is due "
        "is not started twice; missed runs are coalesced into one.",
    )
    report_cron: str | None = Field(
        "0 9 * * mon",
        description="When the weekly report runs (crontab: minute hour day month "
        "weekday), in `report_timezone`; it reports the last full ISO week. Unset: never.",
    )
    report_timezone: str = Field("UTC", description="IANA time zone of `report_cron`.")
    misfire_grace_s: DurationS = Field(
        60,
        alias="misfire_grace",
        ge=1,
        description="A run that could not start on time (the process was busy or "
        "paused) still starts if it is at most this late; later, it is skipped.",
    )
    unhealthy_after: int = Field(
        3,
        ge=1,
        description="`/healthz` answers 503 when no cycle has succeeded for this many intervals.",
    )
    lease: str | None = Field(
        "gpuwatch/gpuwatch-daemon",
        description="`namespace/name` of the Lease that lets one replica run cycles (the "
        "others wait); unset: no election (one replica, or no cluster).",
    )

    @field_validator("report_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_time_zone(value)
