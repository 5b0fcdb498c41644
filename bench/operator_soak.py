"""`sloguard bench operator`: a soak of the real operator against a real Kubernetes control plane.

Starts etcd + kube-apiserver + kube-controller-manager (`tests/sloguard_testing/kube_cluster.py`, from
`../shared/k8s`), installs the Helm chart's ServiceAccount and RBAC, and runs `sloguard operator
--all-namespaces` as that account with the chart's default resync interval. A seeded, bounded driver then
creates, edits and deletes pools and SLOClasses at random (full: 50 pools, 6 classes, 10 minutes; quick:
10 pools, 3 classes, 2 minutes), and leaves the last minute without changes. Measured:

- `converge_p50_s`, `converge_p99_s`: from an operation to the moment every pool it touches has children
  that match its spec (as the operator's own builders render it, checked against the live objects by
  `core.drift.needs_apply`) or, for a deleted pool, no children left (the garbage collector);
- `unconverged`: pools whose children do not match their final spec at the end (or deleted pools with
  children left), after a bounded wait;
- `idle_writes_per_min`: writes the operator made (audit log, by its ServiceAccount) during the last
  minute, in which nothing changed;
- `operator_restarts`: times the operator process exited and had to be started again;
- `operator_rss_mb`: the operator's largest resident set size, sampled during the run.

Needs the checkout (the control-plane helpers live under tests/) and ../shared/k8s beside it.
"""

import importlib
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sloguard.bench import BenchResult
from sloguard.operator.core.drift import needs_apply, with_digest
from sloguard.operator.core.plan import parse_pool, plan_pool

REPO_ROOT = Path(__file__).resolve().parent.parent
API = "/apis/sloguard.dev/v1alpha1"
NAMESPACES = ("soak-a", "soak-b", "soak-c")
MERGE = "application/merge-patch+json"
IDLE_S = 60.0
"""The last minute: no changes, writes counted."""
CONVERGE_BOUND_S = 120.0
"""How long an operation may take to converge before it counts as unconverged."""
SEED = 13
CHART_RESYNC_S = 30.0
"""The Helm chart's default operator.resyncIntervalSeconds: the soak runs the operator as installed."""


@dataclass(frozen=True)
class SoakConfig:
    pools: int
    classes: int
    duration_s: float
    op_interval_s: float

    @classmethod
    def for_run(cls, quick: bool) -> "SoakConfig":
        if quick:
            return cls(pools=10, classes=3, duration_s=120.0, op_interval_s=1.0)
        return cls(pools=50, classes=6, duration_s=600.0, op_interval_s=1.0)


@dataclass
class Op:
    """One change the driver made and the pools whose children it should change."""

    kind: str
    at_s: float
    pools: tuple[tuple[str, str], ...]
    converged_s: float | None = None


@dataclass
class World:
    """What the driver believes exists (it made all of it)."""

    rng: random.Random
    config: SoakConfig
    classes: dict[str, str] = field(default_factory=dict)  # name -> ttft
    pools: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (ns, name) -> spec
    next_pool: int = 0
    next_class: int = 0

    def users_of(self, cls: str) -> tuple[tuple[str, str], ...]:
        return tuple(k for k, spec in self.pools.items() if cls in spec["sloClasses"])


def _ttft(rng: random.Random) -> str:
    return f"{rng.randrange(200, 2000, 50)}ms"


def _pool_spec(world: World) -> dict[str, Any]:
    rng = world.rng
    classes = rng.sample(sorted(world.classes), k=rng.randint(1, min(2, len(world.classes))))
    engine: dict[str, Any] = {"image": f"vllm/vllm-openai:v0.{rng.randint(9, 11)}.0"}
    if rng.random() < 0.5:
        engine["args"] = ["--enable-prefix-caching"]
    if rng.random() < 0.5:
        engine["env"] = [{"name": "VLLM_LOGGING_LEVEL", "value": rng.choice(["INFO", "DEBUG"])}]
    if rng.random() < 0.5:
        engine["resources"] = {"requests": {"memory": rng.choice(["1024Mi", "2Gi", "512Mi"])}}
    return {"model": "m", "engine": engine, "sloClasses": classes, "replicas": rng.randint(1, 3)}


def next_operation(world: World) -> tuple[str, dict[str, Any]]:
    """The driver's next change (pure apart from the world's seeded generator): kind and arguments."""
    rng, cfg = world.rng, world.config
    if len(world.classes) < cfg.classes:
        return "create-class", {"name": f"soak-c{world.next_class}", "ttft": _ttft(rng)}
    if len(world.pools) < cfg.pools // 2:
        return "create-pool", {}
    choices = ["edit-pool"] * 4 + ["scale-pool"] * 2 + ["edit-class"] * 2 + ["delete-pool", "create-pool"]
    unused = [c for c in world.classes if not world.users_of(c)]
    if unused:
        choices.append("delete-class")
    kind = rng.choice(choices)
    if kind == "create-pool" and len(world.pools) >= cfg.pools:
        kind = "edit-pool"
    if kind in {"edit-pool", "scale-pool", "delete-pool"} and not world.pools:
        kind = "create-pool"
    return kind, {}


class Driver:
    """Makes the operations on the control plane and remembers which pools each one touches."""

    def __init__(self, plane: Any, world: World) -> None:
        self.plane = plane
        self.world = world

    def _pool_path(self, key: tuple[str, str]) -> str:
        return f"{API}/namespaces/{key[0]}/inferencepools/{key[1]}"

    def apply(self, kind: str, args: dict[str, Any], now_s: float) -> Op:
        if kind.endswith("-class"):
            return self._class_op(kind, args, now_s)
        return self._pool_op(kind, now_s)

    def _class_op(self, kind: str, args: dict[str, Any], now_s: float) -> Op:
        w, plane = self.world, self.plane
        if kind == "create-class":
            w.classes[args["name"]] = args["ttft"]
            w.next_class += 1
            plane.request(
                "POST",
                f"{API}/sloclasses",
                {
                    "apiVersion": "sloguard.dev/v1alpha1",
                    "kind": "SLOClass",
                    "metadata": {"name": args["name"]},
                    "spec": {"ttft": args["ttft"], "tpot": "50ms"},
                },
            )
            return Op(kind, now_s, ())
        if kind == "edit-class":
            cls = w.rng.choice(sorted(w.classes))
            w.classes[cls] = _ttft(w.rng)
            plane.request(
                "PATCH", f"{API}/sloclasses/{cls}", {"spec": {"ttft": w.classes[cls]}}, content_type=MERGE
            )
            return Op(kind, now_s, w.users_of(cls))
        cls = w.rng.choice(sorted(c for c in w.classes if not w.users_of(c)))  # delete-class: an unused one
        del w.classes[cls]
        plane.request("DELETE", f"{API}/sloclasses/{cls}")
        return Op(kind, now_s, ())

    def _pool_op(self, kind: str, now_s: float) -> Op:
        w, plane = self.world, self.plane
        if kind == "create-pool":
            key = (w.rng.choice(NAMESPACES), f"pool-{w.next_pool}")
            w.next_pool += 1
            spec = _pool_spec(w)
            w.pools[key] = spec
            plane.request(
                "POST",
                f"{API}/namespaces/{key[0]}/inferencepools",
                {
                    "apiVersion": "sloguard.dev/v1alpha1",
                    "kind": "InferencePool",
                    "metadata": {"name": key[1], "namespace": key[0]},
                    "spec": spec,
                },
            )
            return Op(kind, now_s, (key,))
        key = w.rng.choice(sorted(w.pools))
        if kind == "delete-pool":
            del w.pools[key]
            plane.request("DELETE", self._pool_path(key))
            return Op(kind, now_s, (key,))
        if kind == "scale-pool":
            replicas = w.rng.randint(0, 4)
            w.pools[key]["replicas"] = replicas
            plane.kubectl("scale", f"sgpool/{key[1]}", "-n", key[0], f"--replicas={replicas}")
            return Op(kind, now_s, (key,))
        # edit-pool: a new spec, which adds and removes fields (args, env, resources) at random
        spec = _pool_spec(w)
        spec["replicas"] = w.pools[key].get("replicas", spec["replicas"])
        old_engine = w.pools[key]["engine"]
        patch_engine = {k: spec["engine"].get(k) for k in {*old_engine, *spec["engine"]}}
        w.pools[key] = spec
        plane.request(
            "PATCH", self._pool_path(key), {"spec": {**spec, "engine": patch_engine}}, content_type=MERGE
        )
        return Op(kind, now_s, (key,))


def _child_path(child: dict[str, Any]) -> str:
    from sloguard.operator.core.paths import object_path

    return object_path(child)


def pool_converged(plane: Any, key: tuple[str, str], classes: dict[str, dict[str, Any]]) -> bool:
    """The pool's children match what its live spec renders to (or, if it is gone, none is left)."""
    ns, name = key
    body = plane.get(f"{API}/namespaces/{ns}/inferencepools/{name}")
    if body is None:
        gone = [
            f"/api/v1/namespaces/{ns}/configmaps/{name}-sidecar",
            f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            f"/api/v1/namespaces/{ns}/services/{name}",
            f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}",
        ]
        return all(plane.get(p) is None for p in gone)
    plan = plan_pool(parse_pool(body), classes)
    if plan.problem is not None:
        return False
    return all(not needs_apply(with_digest(c), plane.get(_child_path(c))) for c in plan.children)


def _classes(plane: Any) -> dict[str, dict[str, Any]]:
    listed = plane.get(f"{API}/sloclasses") or {}
    return {c["metadata"]["name"]: c for c in listed.get("items", [])}


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _helpers() -> tuple[Any, Any]:
    tests = REPO_ROOT / "tests"
    if not (tests / "sloguard_testing" / "kube_cluster.py").is_file():
        raise SystemExit("sloguard bench operator needs the source checkout (tests/sloguard_testing)")
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    return importlib.import_module("sloguard_testing.kube_cluster"), importlib.import_module(
        "sloguard_testing.kube_operator"
    )


class Soak:
    """One soak run: the control plane, the operator (restarted if it ever exits), the driver."""

    def __init__(self, plane: Any, kube_operator: Any, config: SoakConfig, seed: int) -> None:
        self.plane = plane
        self.kube_operator = kube_operator
        self.workdir = Path(tempfile.mkdtemp(prefix="sloguard-soak-"))
        for ns in NAMESPACES:
            plane.kubectl("create", "namespace", ns)
        self.identity = kube_operator.chart_identity(plane, self.workdir)
        self.restarts = 0
        self.operator = self._start_operator()
        self.rss_mb = 0.0
        self.world = World(random.Random(seed), config)
        self.driver = Driver(plane, self.world)
        self.ops: list[Op] = []

    def _start_operator(self) -> Any:
        operator = self.kube_operator.OperatorProcess(
            self.identity, self.workdir / "operator.log", resync_interval_s=CHART_RESYNC_S
        )
        operator.wait_started()
        return operator

    def keep_operator(self) -> None:
        """Count and restart an operator that exited; sample its memory."""
        if not self.operator.alive:
            self.restarts += 1
            self.operator = self._start_operator()
        self.rss_mb = max(self.rss_mb, _rss_mb(self.operator.process.pid))

    def check_pending(self) -> None:
        pending = [op for op in self.ops if op.converged_s is None]
        if not pending:
            return
        classes = _classes(self.plane)
        done: dict[tuple[str, str], bool] = {}
        for op in pending:
            if all(done.setdefault(k, pool_converged(self.plane, k, classes)) for k in op.pools):
                op.converged_s = time.monotonic() - op.at_s

    def drive(self, until_s: float) -> None:
        """Operations every op_interval_s until `until_s`, then until they converge (bounded)."""
        next_op_s = time.monotonic()
        while True:
            now = time.monotonic()
            unsettled = any(op.converged_s is None for op in self.ops)
            if (now >= until_s and not unsettled) or now > until_s + CONVERGE_BOUND_S:
                return
            self.keep_operator()
            if next_op_s <= now < until_s:
                kind, args = next_operation(self.world)
                self.ops.append(self.driver.apply(kind, args, now))
                next_op_s = now + self.world.config.op_interval_s
            self.check_pending()
            time.sleep(0.1)  # the driver's tick

    def idle_writes(self) -> list[Any]:
        """The operator's writes during one minute in which nothing changes."""
        since_wall_s = time.time()
        until_s = time.monotonic() + IDLE_S
        while time.monotonic() < until_s:
            self.keep_operator()
            time.sleep(1.0)  # the idle minute is itself the measurement
        writes: list[Any] = self.kube_operator.operator_writes(
            self.plane, self.identity.username, since_s=since_wall_s
        )
        return writes

    def unconverged(self) -> list[str]:
        classes = _classes(self.plane)
        touched = {k for op in self.ops for k in op.pools} | set(self.world.pools)
        return sorted(f"{ns}/{n}" for ns, n in touched if not pool_converged(self.plane, (ns, n), classes))


def soak(config: SoakConfig, seed: int = SEED) -> dict[str, Any]:
    cluster, kube_operator = _helpers()
    with cluster.control_plane() as plane:
        run = Soak(plane, kube_operator, config, seed)
        try:
            run.drive(time.monotonic() + max(0.0, config.duration_s - IDLE_S))
            idle = run.idle_writes()
            unconverged = run.unconverged()
            run.keep_operator()
        finally:
            run.operator.stop()
            shutil.rmtree(run.workdir, ignore_errors=True)
    ops = run.ops
    converge = [op.converged_s for op in ops if op.converged_s is not None and op.pools]
    return {
        "pools": len(run.world.pools),
        "operations": len(ops),
        "converge_p50_s": round(statistics.median(converge), 3) if converge else 0.0,
        "converge_p99_s": round(_percentile(converge, 0.99), 3),
        "converge_max_s": round(max(converge, default=0.0), 3),
        "unconverged": len(unconverged) + sum(1 for op in ops if op.pools and op.converged_s is None),
        "unconverged_pools": unconverged,
        "idle_writes_per_min": round(len(idle) * 60.0 / IDLE_S, 2),
        "idle_write_uris": sorted({str(e.get("requestURI", "")) for e in idle})[:20],
        "operator_restarts": run.restarts,
        "operator_rss_mb": round(run.rss_mb, 1),
        "config": {
            "pools": config.pools,
            "classes": config.classes,
            "duration_s": config.duration_s,
            "seed": seed,
        },
        "op_kinds": {k: sum(1 for op in ops if op.kind == k) for k in sorted({op.kind for op in ops})},
    }


def markdown(data: dict[str, Any], quick: bool) -> str:
    cfg = data["config"]
    workload = (
        f"{cfg['pools']} pools, {cfg['classes']} classes, {cfg['duration_s']:.0f} s, seed {cfg['seed']}"
    )
    rows = [
        ("converge p50 (s)", data["converge_p50_s"], "-", "-"),
        ("converge p99 (s)", data["converge_p99_s"], "<= 10", data["converge_p99_s"] <= 10),
        ("unconverged", data["unconverged"], "0", data["unconverged"] == 0),
        ("idle writes / min", data["idle_writes_per_min"], "0", data["idle_writes_per_min"] == 0),
        ("operator restarts", data["operator_restarts"], "0", data["operator_restarts"] == 0),
        ("operator RSS (MB)", data["operator_rss_mb"], "-", "-"),
    ]
    lines = [
        f"Operator soak{' (quick)' if quick else ''}: {workload}; {data['operations']} operations "
        f"({', '.join(f'{k} {v}' for k, v in data['op_kinds'].items())}), {data['pools']} pools at the end.",
        "",
        "| metric | measured | target | met |",
        "|---|---|---|---|",
        *[
            f"| {m} | {v} | {t} | {'yes' if ok is True else 'no' if ok is False else '-'} |"
            for m, v, t, ok in rows
        ],
    ]
    return "\n".join(lines) + "\n"


def run(quick: bool) -> BenchResult:
    data = soak(SoakConfig.for_run(quick))
    return BenchResult(data=data, markdown=markdown(data, quick))
