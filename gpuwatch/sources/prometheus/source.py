"""The metrics seam over a PromQL API: one cycle's window aggregates, per GPU.

A cycle first asks which GPUs reported recently (the inventory, over the longest window
or the last hour, whichever is shorter: every series of the utilization, graphics-engine
or framebuffer metrics, with the time of its newest sample), then asks each
aggregate, sharded by GPU so that no request loads more than the sample budget, with
at most ``max_concurrency`` requests in flight. A request refused as too big is halved
and asked again; what still fails after ``max_split_depth`` halvings fails the cycle
as partial data, so that nothing is judged on half the fleet.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import numpy as np

from gpuwatch.config.settings import PrometheusSettings
from gpuwatch.model.errors import SourceBadQuery, SourcePartialData, SourceTooLarge
from gpuwatch.model.metrics import (
    Aggregate,
    AggregateSpec,
    FloatArray,
    GpuDevice,
    HistoryFrame,
    HistoryRequest,
    HolderHistory,
    PodRef,
    WindowRequest,
    WindowStats,
    inventory_window_s,
)
from gpuwatch.promql import PodLabels, QueryBuilder, QueryPart, Shard, pod_labels_for, shards
from gpuwatch.sources.base import Progress
from gpuwatch.sources.prometheus.client import InstantSeries, PrometheusClient, RangeSeries
from gpuwatch.sources.prometheus.planner import (
    RangeChunk,
    RangePlan,
    instant_shard_count,
    plan_range,
)

log = logging.getLogger(__name__)


class PrometheusMetricsSource:
    name = "prometheus"

    def __init__(self, client: PrometheusClient, settings: PrometheusSettings) -> None:
        self.client = client
        self.settings = settings
        self.labels = settings.labels

    def window_stats(self, request: WindowRequest) -> WindowStats:
        at = request.at
        longest = max((s.window_s for s in request.specs), default=300)
        seen_within = inventory_window_s(request)
        inventory = self._inventory(seen_within, at, timed=True)
        present = [s for s in inventory if s.value > at.timestamp() - seen_within]
        pods = self._pod_labels(present)
        devices = self._devices(present, pods)
        keys = {self._key(d.uuid, d.mig_instance_id): i for i, d in enumerate(devices)}

        builder = QueryBuilder(self.settings.metrics, self.labels, self._step(), pods.pod)
        count = instant_shard_count(
            len(present), longest, self.settings.scrape_interval_s, self.settings.sample_budget
        )
        plan = [(spec, builder.parts(spec)) for spec in sorted(request.specs)]
        tasks = [(spec, i, part) for spec, parts in plan for i, part in enumerate(parts)]
        with ThreadPoolExecutor(max_workers=self.settings.max_concurrency) as pool:
            answers = list(pool.map(lambda task: self._sharded(task[2], shards(count), at), tasks))

        by_part: dict[tuple[AggregateSpec, int], list[InstantSeries]] = {
            (spec, i): answer for (spec, i, _), answer in zip(tasks, answers, strict=True)
        }
        values: dict[AggregateSpec, FloatArray] = {}
        for spec, parts in plan:
            merged = np.full(len(devices), np.nan)
            for i, part in enumerate(parts):  # the first part that has a GPU wins
                column = self._column(by_part[(spec, i)], keys, part.scale)
                merged = np.where(np.isnan(merged), column, merged)
            if spec.aggregate is Aggregate.LAST_TS:
                # The lookback delta can reach a sample from before the window: not in it.
                merged[merged <= at.timestamp() - spec.window_s] = np.nan
            if spec.aggregate is Aggregate.COUNT:
                # PromQL returns no series where a GPU has no sample in this window (it
                # had some in the longest one): that is a count of zero.
                merged = np.nan_to_num(merged, nan=0.0)
            values[spec] = merged
        return WindowStats(at, self.settings.scrape_interval_s, tuple(devices), values)

    def history(self, request: HistoryRequest, progress: Progress | None = None) -> HistoryFrame:
        """Per-GPU aggregates at every step, computed on the server by range queries
        planned to the point and sample limits; answers go straight into arrays."""
        times = request.times_s()
        specs = sorted(request.specs)
        if times.size == 0 or not specs:
            return HistoryFrame((), times, {spec: np.empty((0, times.size)) for spec in specs})
        step = request.step_s
        recent = self._inventory(max(step, 300), request.end, timed=False)
        pod_label = self._pod_labels(recent).pod
        labels = self.labels
        identity = (*labels.node, labels.gpu, labels.model)
        builder = QueryBuilder(
            self.settings.metrics, labels, self._step(), pod_label, identity=identity
        )
        tasks: list[tuple[AggregateSpec, int, QueryPart, RangeChunk, Shard]] = []
        for spec in specs:
            plan = self._plan(times, step, len(recent), spec.window_s)
            for i, part in enumerate(builder.parts(spec)):
                for chunk in plan.chunks:
                    for shard in shards(plan.shard_count):
                        tasks.append((spec, i, part, chunk, shard))

        answers = self._ranges([(t[2], t[3], t[4]) for t in tasks], step, progress)

        keys: dict[tuple[str, str], GpuDevice] = {}
        for answer in answers:
            for series in answer:
                key = self._series_key(series.labels)
                if key[0] and key not in keys:
                    keys[key] = self._device(key, series.labels)
        order = sorted(keys)
        row = {key: i for i, key in enumerate(order)}
        values = {spec: np.full((len(order), times.size), np.nan) for spec in specs}
        filled = {spec: np.zeros((len(order), times.size), dtype=bool) for spec in specs}
        # Parts are applied in order; the first part that has a GPU at a time wins.
        for (spec, _, part, _, _), answer in zip(tasks, answers, strict=True):
            target, seen = values[spec], filled[spec]
            for series in answer:
                key = self._series_key(series.labels)
                r = row.get(key)
                if r is None:
                    continue
                cols = ((series.times_s - int(times[0])) // step).astype(np.int64)
                free = ~seen[r, cols]
                target[r, cols[free]] = series.values[free] * part.scale
                seen[r, cols[free]] = True
        devices = tuple(keys[key] for key in order)
        return HistoryFrame(devices, times, values)

    def _plan(self, times: FloatArray, step: int, series: int, window_s: int) -> RangePlan:
        """Range queries over ``times`` for ``series`` series of a ``window_s`` window,
        within the point and sample limits."""
        return plan_range(
            int(times[0]),
            int(times[-1]),
            step,
            series=max(series, 1),
            scrape_interval_s=self.settings.scrape_interval_s,
            window_s=window_s,
            max_points=self.settings.max_points_per_series,
            sample_budget=self.settings.sample_budget,
        )

    def holders(self, request: HistoryRequest, progress: Progress | None = None) -> HolderHistory:
        """Per step, the pod whose label the exporter put on each GPU for most samples,
        from one counting range query per chunk and shard (planned like ``history``)."""
        times = request.times_s()
        step = request.step_s
        if times.size == 0:
            return HolderHistory((), times, (), np.empty((0, 0), dtype=np.int32))
        recent = self._inventory(max(step, 300), request.end, timed=False)
        pods = self._pod_labels(recent)
        pod_label, namespace_label = pods.pod, pods.namespace
        builder = QueryBuilder(self.settings.metrics, self.labels, self._step(), pod_label)
        part = builder.holders(step, namespace_label)
        plan = self._plan(times, step, len(recent), step)
        tasks = [(part, c, s) for c in plan.chunks for s in shards(plan.shard_count)]
        answers = [series for answer in self._ranges(tasks, step, progress) for series in answer]
        keys = sorted(
            {self._series_key(s.labels) for s in answers if s.labels.get(self.labels.uuid)}
        )
        row = {key: i for i, key in enumerate(keys)}
        pods: dict[PodRef, int] = {}
        codes = np.full((len(keys), times.size), -1, dtype=np.int32)
        best = np.zeros((len(keys), times.size))
        for series in answers:
            key = self._series_key(series.labels)
            if key not in row or not series.labels.get(pod_label):
                continue
            pod = PodRef(series.labels.get(namespace_label, ""), series.labels[pod_label])
            code = pods.setdefault(pod, len(pods))
            cols = ((series.times_s - int(times[0])) // step).astype(np.int64)
            r = row[key]
            more = series.values > best[r, cols]
            codes[r, cols[more]] = code
            best[r, cols[more]] = series.values[more]
        device_ids = tuple(uuid if not mig else f"{uuid}/mig-{mig}" for uuid, mig in keys)
        return HolderHistory(device_ids, times, tuple(pods), codes)

    def _ranges(
        self,
        tasks: Sequence[tuple[QueryPart, RangeChunk, Shard]],
        step: int,
        progress: Progress | None,
    ) -> list[list[RangeSeries]]:
        """Every range query, ``max_concurrency`` in flight, answers in task order."""
        done = 0
        lock = threading.Lock()

        def run(task: tuple[QueryPart, RangeChunk, Shard]) -> list[RangeSeries]:
            nonlocal done
            part, chunk, shard = task
            answer = self._range_split(part, shard, chunk, step, 0)
            with lock:
                done += 1
                if progress is not None:
                    progress(done, len(tasks))
            return answer

        with ThreadPoolExecutor(max_workers=self.settings.max_concurrency) as pool:
            return list(pool.map(run, tasks))

    def _range_split(
        self, part: QueryPart, shard: Shard, chunk: RangeChunk, step: int, depth: int
    ) -> list[RangeSeries]:
        promql = part.render(shard, self.labels.uuid)
        try:
            return self.client.range(promql, chunk.start_s, chunk.end_s, step)
        except SourceTooLarge as exc:
            if depth >= self.settings.max_split_depth:
                raise SourcePartialData(
                    f"{exc}; still refused for {shard} from {chunk.start_s} to {chunk.end_s} "
                    f"after {depth} splits"
                ) from exc
            left, right = shard.split()
            return self._range_split(part, left, chunk, step, depth + 1) + self._range_split(
                part, right, chunk, step, depth + 1
            )

    def _device(self, key: tuple[str, str], lab: Mapping[str, str]) -> GpuDevice:
        labels = self.labels
        candidates = self._node_candidates(lab)
        return GpuDevice(
            uuid=key[0],
            index=_int(lab.get(labels.gpu), -1),
            node=candidates[0] if candidates else "",
            model_name=lab.get(labels.model, ""),
            mig_instance_id=_int(key[1], None) if key[1] else None,
            node_candidates=candidates,
        )

    def _node_candidates(self, lab: Mapping[str, str]) -> tuple[str, ...]:
        """The distinct values of the node labels, in the settings' order."""
        return tuple(dict.fromkeys(lab[name] for name in self.labels.node if lab.get(name)))

    def _step(self) -> float:
        return self.settings.scrape_interval_s

    def _sharded(
        self, part: QueryPart, parts: Sequence[Shard], at: datetime
    ) -> list[InstantSeries]:
        found: list[InstantSeries] = []
        for shard in parts:
            found.extend(self._split_on_refusal(part, shard, at, 0))
        return found

    def _split_on_refusal(
        self, part: QueryPart, shard: Shard, at: datetime, depth: int
    ) -> list[InstantSeries]:
        promql = part.render(shard, self.labels.uuid)
        try:
            return self.client.instant(promql, at)
        except SourceTooLarge as exc:
            if depth >= self.settings.max_split_depth:
                raise SourcePartialData(
                    f"{exc}; still refused for {shard} after {depth} splits "
                    "(raise prometheus.max_split_depth or the server's limits)"
                ) from exc
            log.info("splitting refused query for %s: %s", shard, exc)
            left, right = shard.split()
            return self._split_on_refusal(part, left, at, depth + 1) + self._split_on_refusal(
                part, right, at, depth + 1
            )

    def _inventory(self, window_s: int, at: datetime, timed: bool) -> list[InstantSeries]:
        """The series of the devices seen in ``(at - window_s, at]`` (``QueryBuilder.
        inventory``); ``timed``: valued at the unix time of each one's newest sample.

        Two cheap reads answer for nearly every series: the window's series, then the
        newest sample of those scraped within the lookback delta. Only a series silent
        since (an exporter gone quiet in the window) is timed by the stepped subquery,
        which costs a step per 5 minutes of window, for its GPUs alone."""
        probe = QueryBuilder(self.settings.metrics, self.labels, self._step(), "pod")
        try:
            listed = self._sharded(probe.inventory(window_s), [Shard()], at)
        except SourceBadQuery as exc:
            if "same labelset" not in str(exc):
                raise
            log.info("this engine drops metric names in last_over_time: %s", exc)
            return self._sharded(probe.inventory_stepped(window_s), [Shard()], at)
        if not timed:
            return listed
        newest = {
            _key_of(s.labels): s.value
            for s in self._sharded(probe.inventory_newest(), [Shard()], at)
        }
        keyed = [(_key_of(s.labels), s) for s in listed]
        silent = [s for key, s in keyed if key not in newest]
        older: dict[tuple[tuple[str, str], ...], float] = {}
        if silent:
            stepped = probe.inventory_stepped(window_s)
            older = {
                _key_of(s.labels): s.value
                for s in self._sharded(stepped, self._shards_of(silent), at)
            }
        times = {**older, **newest}
        return [InstantSeries(s.labels, times[key]) for key, s in keyed if key in times]

    def _shards_of(self, series: Sequence[InstantSeries]) -> list[Shard]:
        """Shards naming exactly these series' GPUs, ``_LISTED_PER_QUERY`` to a query to
        keep its URL short, where their UUIDs allow it (few enough, each ``GPU-…``);
        else every GPU in one."""
        uuids = sorted({s.labels.get(self.labels.uuid, "") for s in series})
        if len(uuids) > 4 * _LISTED_PER_QUERY or not all(
            u[:4].upper() == "GPU-" and u[4:] for u in uuids
        ):
            return [Shard()]
        return [
            Shard(tuple(u[4:] for u in uuids[i : i + _LISTED_PER_QUERY]))
            for i in range(0, len(uuids), _LISTED_PER_QUERY)
        ]

    def _pod_labels(self, series: Sequence[InstantSeries]) -> PodLabels:
        """Which labels name pods on these series (``prometheus.labels.pod_labels``)."""
        seen = {name for item in series for name in item.labels}
        return pod_labels_for(self.labels.pod_labels, seen)

    def _series_key(self, labels: Mapping[str, str]) -> tuple[str, str]:
        return self._key(labels.get(self.labels.uuid, ""), labels.get(self.labels.mig_instance))

    def _key(self, uuid: str, mig: int | str | None) -> tuple[str, str]:
        return (uuid, "" if mig is None else str(mig))

    def _devices(self, series: Sequence[InstantSeries], pods: PodLabels) -> list[GpuDevice]:
        """One device per GPU (or MIG instance) in the inventory, with the pods the
        exporter maps to it at its newest scrape."""
        labels = self.labels
        by_key: dict[tuple[str, str], list[InstantSeries]] = defaultdict(list)
        for item in series:
            uuid = item.labels.get(labels.uuid)
            if uuid:
                by_key[self._key(uuid, item.labels.get(labels.mig_instance))].append(item)
        # A MIG-enabled GPU is its instances: series of the parent itself (device-level
        # metrics some exporters add) make no second device beside them.
        partitioned = {uuid for uuid, mig in by_key if mig}
        # Pods still labelled within two scrapes of the device's newest sample hold it
        # now (time-slicing and MPS put several there); older ones held it earlier.
        fresh_s = 2 * self.settings.scrape_interval_s
        devices = []
        for (uuid, mig), items in sorted(by_key.items()):
            if not mig and uuid in partitioned:
                continue
            items.sort(key=lambda item: -item.value)
            lab = items[0].labels
            holding = [
                PodRef(i.labels[pods.namespace], i.labels[pods.pod])
                for i in items
                if i.value >= items[0].value - fresh_s
                and i.labels.get(pods.pod)
                and i.labels.get(pods.namespace)
            ]
            holding = list(dict.fromkeys(holding))
            candidates = self._node_candidates(lab)
            devices.append(
                GpuDevice(
                    uuid=uuid,
                    index=_int(lab.get(labels.gpu), -1),
                    node=candidates[0] if candidates else "",
                    model_name=lab.get(labels.model, ""),
                    pci_bus_id=lab.get(labels.pci_bus_id, ""),
                    mig_profile=_profile(lab.get(labels.mig_profile)),
                    mig_instance_id=_int(mig, None) if mig else None,
                    pod=holding[0] if holding else None,
                    container=lab.get(pods.container) or None,
                    shared_with=tuple(holding[1:]),
                    node_candidates=candidates,
                )
            )
        return devices

    def _column(
        self, series: Sequence[InstantSeries], keys: Mapping[tuple[str, str], int], scale: float
    ) -> FloatArray:
        column = np.full(len(keys), np.nan)
        for item in series:
            key = self._series_key(item.labels)
            index = keys.get(key)
            if index is not None:
                column[index] = item.value * scale
        return column


_LISTED_PER_QUERY = 64
"""The most GPUs one query names in a UUID matcher (about 2.5 KB of URL)."""


def _key_of(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _profile(text: str | None) -> str | None:
    """A MIG profile label; some exporter versions write ``<<<NULL>>>`` for unknown."""
    if not text or text.startswith("<<<"):
        return None
    return text


def _int(text: str | None, default: int | None) -> int | None:  # type: ignore[return]
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
