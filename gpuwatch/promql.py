"""PromQL for every (signal, aggregate, window) a cycle needs, per GPU shard.

Pure query text, with no client and no I/O, shared by the two places that must agree on
it to the character: the Prometheus source, which asks these queries every cycle, and
the ``PrometheusRule`` export, whose alerts evaluate the same expressions inside
Prometheus. Only metric and label names (``gpuwatch.config``) and the aggregates asked
for (``gpuwatch.model``) go in.

A GPU is identified by ``UUID`` (plus ``GPU_I_ID`` for a MIG instance). Its series
change labels when the pod holding it changes, so every query first merges a GPU's
series (``sum/max by (UUID, GPU_I_ID)``) and reduces over time on the server. Raw
signals use exact range functions (``sum_over_time / count_over_time`` for a mean that
skips gaps); signals computed across metrics (the framebuffer ratio) use a subquery
at the scrape interval, the finest step that adds information.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuwatch.config.settings import DcgmLabels, DcgmMetricNames
from gpuwatch.model.metrics import Aggregate, AggregateSpec, Signal

_HEX = "0123456789abcdef"


@dataclass(frozen=True)
class PodLabels:
    """The labels that name the pod (and its namespace and container) using a GPU."""

    pod: str
    namespace: str
    container: str


POD_LABEL_SETS: dict[str, PodLabels] = {
    "exported": PodLabels("exported_pod", "exported_namespace", "exported_container"),
    "legacy": PodLabels("pod_name", "pod_namespace", "container_name"),
    "plain": PodLabels("pod", "namespace", "container"),
}
"""In the order ``auto`` tries them: ``exported_*`` first, because where they exist the
plain ones name the exporter's own pod (the scrape target)."""


def pod_labels_for(mode: str, seen: set[str]) -> PodLabels:
    """The pod labels of ``mode``; for ``auto``, the first set whose pod label is among
    the label names ``seen`` on the GPU series (plain when none is)."""
    if mode != "auto":
        return POD_LABEL_SETS[mode]
    return next(
        (labels for labels in POD_LABEL_SETS.values() if labels.pod in seen),
        POD_LABEL_SETS["plain"],
    )


@dataclass(frozen=True)
class Shard:
    """The GPUs whose UUID (after ``GPU-``) starts with one of ``prefixes``; ``("",)`` is all.

    UUIDs are random hex, so prefixes split a fleet evenly without knowing its nodes.
    """

    prefixes: tuple[str, ...] = ("",)

    @property
    def whole(self) -> bool:
        return self.prefixes == ("",)

    def matcher(self, uuid_label: str) -> str:
        if self.whole:
            return ""
        alternatives = "|".join(self.prefixes)
        return f'{uuid_label}=~"(?i)GPU-({alternatives}).*"'

    def split(self) -> tuple[Shard, Shard]:
        """Two shards that together select exactly this one's GPUs."""
        prefixes = list(self.prefixes)
        if len(prefixes) == 1:
            prefixes = [prefixes[0] + h for h in _HEX]
        half = len(prefixes) // 2
        return Shard(tuple(prefixes[:half])), Shard(tuple(prefixes[half:]))

    def __str__(self) -> str:
        return "all GPUs" if self.whole else f"GPUs GPU-{'|'.join(self.prefixes)}*"


def shards(count: int) -> list[Shard]:
    """``count`` (rounded up to a power of two, at most 4096) shards covering every GPU."""
    result = [Shard()]
    while len(result) < count and len(result) < 4096:
        result = [part for shard in result for part in shard.split()]
    return result


@dataclass(frozen=True)
class QueryPart:
    """One query whose per-GPU result contributes to an aggregate, scaled by ``scale``."""

    template: str
    """PromQL with ``$SEL`` where each selector's shard matcher goes."""
    scale: float = 1.0

    def render(self, shard: Shard, uuid_label: str) -> str:
        matcher = shard.matcher(uuid_label)
        text = self.template.replace(",$SEL", ("," + matcher) if matcher else "")
        return text.replace("{$SEL}", "{" + matcher + "}" if matcher else "")


class QueryBuilder:
    """Builds the queries; pure, so the exact PromQL is unit-tested."""

    def __init__(
        self,
        names: DcgmMetricNames,
        labels: DcgmLabels,
        step_s: float,
        pod_label: str,
        identity: tuple[str, ...] = (),
    ) -> None:
        """``identity``: labels kept besides the GPU key (stable per GPU, so keeping them
        splits no series), for answers that must name a GPU's node and model."""
        self.names = names
        self.labels = labels
        self.step_s = max(int(step_s), 1)
        self.step = f"{self.step_s}s"
        self.by = ", ".join((labels.uuid, labels.mig_instance, *identity))
        self.pod_label = pod_label

    def _m(self, metric: str, extra: str = "") -> str:
        # ``$SEL`` becomes the shard's matcher, or nothing for the whole fleet.
        return f"{metric}{{{extra},$SEL}}" if extra else f"{metric}{{$SEL}}"

    def _fresh(self, metric: str, extra: str = "") -> str:
        """The sample of the last scrape interval only. Inside a subquery a bare selector
        would repeat a value for up to 5 minutes (the lookback delta) into a gap."""
        return f"last_over_time({self._m(metric, extra)}[{self._range(self.step_s)}])"

    @staticmethod
    def _range(window_s: int) -> str:
        # Windows are (at - window, at], left-open as in Prometheus 3. Prometheus 2 also
        # takes a sample exactly at at - window; one millisecond less makes both agree.
        return f"{window_s * 1000 - 1}ms"

    def _families(self) -> str:
        """Every exporter family, each series keeping its name."""
        names = sorted({self.names.device_families, *self.names.model_dump().values()} - {""})
        return f'{{__name__=~"{"|".join(names)}",$SEL}}'

    def _relabelled(self) -> str:
        """Every family, its name copied into ``family_`` so that a function that drops
        the name leaves two families of one device apart, until they are merged away."""
        return f'label_replace({self._families()}, "family_", "$1", "__name__", "(.*)")'

    def inventory(self, window_s: int) -> QueryPart:
        """Every device (GPU or MIG instance) that any of the exporter's families
        reported in the window, with its identity and pod labels: one series per set of
        those labels (another pod on the same device stays apart); the value counts the
        families. Any family counts: exporters differ in which they send (no GPU_UTIL for
        MIG, no framebuffer for MIG on some versions, custom counter lists).

        One pass over each series' samples in the window: ``last_over_time`` keeps the
        metric name (PromQL drops it for every other range function), so two families
        of one device do not collide before ``count by`` merges them. An engine that
        drops it anyway refuses the query; ``inventory_stepped`` then answers."""
        kept = ", ".join(self.inventory_labels())
        window = self._range(window_s)
        return QueryPart(f"count by ({kept}) (last_over_time({self._families()}[{window}]))")

    def inventory_newest(self) -> QueryPart:
        """The inventory's series with a sample of a named family (``prometheus.metrics``)
        within the lookback delta (5 minutes by default), valued at the unix time of their
        newest sample. ``timestamp()`` gives a sample's own time only applied to a
        selector (to anything else, the evaluation's), so each family is asked on its
        own; each family's answer is labelled with its number (``timestamp()`` dropped
        the name) so that ``or`` keeps them all and ``max by`` takes the newest (a family
        that stopped a scrape or two before the others does not date the device)."""
        kept = ", ".join(self.inventory_labels())
        names = sorted(set(self.names.model_dump().values()) - {"", self.names.device_families})
        stamps = " or ".join(
            f'label_replace(timestamp({self._m(name)}), "family_", "{i}", "", "")'
            for i, name in enumerate(names)
        )
        return QueryPart(f"max by ({kept}) ({stamps})")

    def inventory_stepped(self, window_s: int) -> QueryPart:
        """The inventory valued at the unix time of each series' newest sample in the
        window, however old: ``timestamp()`` at every step of a subquery. Its step is the
        lookback delta's default (5 min): each step's ``timestamp()`` still sees every
        sample, and the query costs a tenth of one stepped at the scrape interval; but it
        is a step per 5 minutes of window over every series of every family, and its
        value the time of the step that saw the sample: the cycle asks it only for the
        series ``inventory_newest`` did not time."""
        kept = ", ".join(self.inventory_labels())
        step = f"{min(300, max(window_s, self.step_s))}s"
        return QueryPart(
            f"max by ({kept}) "
            f"(max_over_time(timestamp({self._relabelled()})[{self._range(window_s)}:{step}]))"
        )

    def inventory_labels(self) -> list[str]:
        """The labels the inventory keeps: identity, node, model and every pod label set."""
        lab = self.labels
        pods = [name for s in POD_LABEL_SETS.values() for name in (s.pod, s.namespace, s.container)]
        wanted = [
            lab.uuid, lab.mig_instance, lab.mig_profile, lab.gpu, lab.model, lab.pci_bus_id,
            *lab.node, *pods,
        ]  # fmt: skip
        return list(dict.fromkeys(wanted))

    def holders(self, window_s: int, namespace_label: str) -> QueryPart:
        """Per GPU and pod, how many samples in the window carried that pod's label: the
        pod with the most held the GPU for most of the window (framebuffer samples, or
        the graphics engine's where there are none)."""
        by = f"{self.labels.uuid}, {self.labels.mig_instance}, {self.pod_label}, {namespace_label}"
        pod = f'{self.pod_label}!=""'
        window = self._range(window_s)
        counts = [
            f"sum by ({by}) (count_over_time({self._m(m, pod)}[{window}]))"
            for m in (self.names.fb_used, self.names.gr_engine_active)
        ]
        return QueryPart(" or ".join(counts))

    def parts(self, spec: AggregateSpec) -> tuple[QueryPart, ...]:
        """The queries for ``spec``; several parts mean 'first that has the GPU wins'."""
        n, w = self.names, spec.window_s
        signal, agg = spec.signal, spec.aggregate
        if signal is Signal.UTIL_RATIO:
            percent_scale = 1.0 if agg in _UNSCALED else 0.01
            # GPU_UTIL is never a MIG instance's utilization (absent, or a constant 0).
            whole_gpus = f'{self.labels.mig_instance}=""'
            return (
                QueryPart(self._raw(n.gr_engine_active, agg, w)),
                QueryPart(self._raw(n.gpu_util, agg, w, whole_gpus), percent_scale),
            )
        raw_metric = {
            Signal.FB_USED_MIB: n.fb_used,
            Signal.TEMP_C: n.temp,
            Signal.POWER_W: n.power,
            Signal.XID: n.xid,
            Signal.TENSOR_ACTIVE_RATIO: n.tensor_active,
        }.get(signal)
        if raw_metric is not None:
            return (QueryPart(self._raw(raw_metric, agg, w)),)
        if signal is Signal.POD_ATTACHED:
            return (QueryPart(self._pod_attached(agg, w)),)
        return (QueryPart(self._framebuffer(signal, agg, w)),)

    def _raw(self, metric: str, agg: Aggregate, w: int, matcher: str = "") -> str:
        m, by, step = self._m(metric, matcher), self.by, self.step
        if agg is Aggregate.AVG:
            return (
                f"sum by ({by}) (sum_over_time({m}[{self._range(w)}])) / "
                f"sum by ({by}) (count_over_time({m}[{self._range(w)}]))"
            )
        if agg is Aggregate.MAX:
            return f"max by ({by}) (max_over_time({m}[{self._range(w)}]))"
        if agg is Aggregate.MIN:
            return f"min by ({by}) (min_over_time({m}[{self._range(w)}]))"
        if agg is Aggregate.COUNT:
            return f"sum by ({by}) (count_over_time({m}[{self._range(w)}]))"
        if agg is Aggregate.CHANGES:
            return f"sum by ({by}) (changes({m}[{self._range(w)}]))"
        if agg is Aggregate.P95:
            # Per series, then the highest: exact unless the pod changed inside the window.
            return f"max by ({by}) (quantile_over_time(0.95, {m}[{self._range(w)}]))"
        if agg is Aggregate.LAST:
            fresh = self._fresh(metric, matcher)
            return f"last_over_time((max by ({by}) ({fresh}))[{self._range(w)}:{step}])"
        return f"max by ({by}) (max_over_time(timestamp({m})[{self._range(w)}:{step}]))"

    def _derived(self, inner: str, count_metric: str, agg: Aggregate, w: int) -> str:
        if agg in (Aggregate.COUNT, Aggregate.LAST_TS):
            return self._raw(count_metric, agg, w)
        window = f"({inner})[{self._range(w)}:{self.step}]"
        if agg is Aggregate.P95:
            return f"quantile_over_time(0.95, {window})"
        function = "changes" if agg is Aggregate.CHANGES else f"{agg}_over_time"
        return f"{function}({window})"

    def _framebuffer(self, signal: Signal, agg: Aggregate, w: int) -> str:
        """Framebuffer ratio and size. A GPU's framebuffer does not change size, so
        ``max(used / total)`` is ``max(used) / total``: the server divides two range
        aggregates instead of evaluating a subquery (about 50 times its cost)."""
        n = self.names
        if agg in (Aggregate.COUNT, Aggregate.LAST_TS):
            return self._raw(n.fb_used, agg, w)
        total = self._fb_total(w)
        if signal is Signal.FB_TOTAL_MIB:
            if agg is Aggregate.CHANGES:
                return f"changes(({total})[{self._range(w)}:{self.step}])"
            return total
        if agg is Aggregate.CHANGES:
            return self._raw(n.fb_used, agg, w)
        return f"({self._raw(n.fb_used, agg, w)}) / ({total})"

    def _fb_total(self, w: int) -> str:
        """``FB_USED + FB_FREE + FB_RESERVED`` at each GPU's newest sample in the window;
        RESERVED only on newer exporters, counted as zero where absent."""
        n, window = self.names, self._range(w)
        used = f"last_over_time({self._m(n.fb_used)}[{window}])"
        free = f"last_over_time({self._m(n.fb_free)}[{window}])"
        reserved = f"last_over_time({self._m(n.fb_reserved)}[{window}])"
        return f"max by ({self.by}) ({used} + {free} + ({reserved} or {used} * 0))"

    def _pod_attached(self, agg: Aggregate, w: int) -> str:
        """1 where a pod-labelled sample exists, 0 where only unlabelled ones do. The
        evidence is the framebuffer series (every device reports it), or the graphics
        engine's where an exporter reports no framebuffer for MIG instances."""
        by = self.by
        evidence = (self.names.fb_used, self.names.gr_engine_active)
        pod = f'{self.pod_label}!=""'
        if agg is Aggregate.MAX:
            window = self._range(w)
            held = [
                f"max by ({by}) (count_over_time({self._m(m, pod)}[{window}]) > bool 0)"
                for m in evidence
            ]
            none = [
                f"max by ({by}) (count_over_time({self._m(m)}[{window}]) * 0)" for m in evidence
            ]
            return " or ".join([*held, *none])
        held = [f"(count by ({by}) ({self._fresh(m, pod)}) > bool 0)" for m in evidence]
        none = [f"(count by ({by}) ({self._fresh(m)}) * 0)" for m in evidence]
        return self._derived(" or ".join([*held, *none]), evidence[0], agg, w)


_UNSCALED = frozenset({Aggregate.COUNT, Aggregate.CHANGES, Aggregate.LAST_TS})
