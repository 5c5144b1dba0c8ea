"""Federation round cost: deployed (SuperLink + SuperNodes on loopback) vs embedded vs the partners' own compute.

For 3 toxcast-6 partners prepared with one plan, runs the same rounds
  1. embedded (one process, partners one after another): round wall time, each partner's compute per round
  2. deployed-cold: SuperLink + 3 SuperNodes, Flower's default fresh `flwr-clientapp` Python per message
  3. deployed: the same with `partner-kit join`'s default warm executor (ClientApp processes forked from an
     already-imported parent, `partner_kit.warm_exec`)
  4. deployed-secagg: 3 with SecAgg+ (4 round trips per round + an example-count probe before round 1)
  5. deployed-tls: 3 over TLS with Flower's node authentication (`consortium certs` / `keygen` / `admit`),
     the consortium's default; its overhead is the TLS handshake and encryption of every message
  5b. deployed-tls-nofront: the same without `consortium.tls_front` (the SuperLink itself on the public port),
     to measure the front's relay: `--modes deployed-tls deployed-tls-nofront --repeats N` interleaves them
  6. deployed-dp: 3 with differential privacy (partners clip their update, the server adds noise and accounts ε;
     `--dp-clip`, `--dp-sigma`)
  7. deployed-fp16: plain deployed with `federation.wire_dtype = "float16"` (half the bytes each way)
For every deployed mode the server side (the SuperLink and every process it starts: SuperExec, ServerApp) is
sampled every 0.2 s (psutil): the peak of the sum of their RSS and each process's own peak, also as a multiple
of one float32 trunk (the issue's goal: server peak <= 4 x one trunk, no copy per partner held at once).
`--pyspy DIR` records the ServerApp with py-spy (raw collapsed stacks, DIR/<mode>-1.txt) in the first repeat.
Round medians leave out each run's round 1 (it also waits for the partners to connect and start); MiB received
per partner and round include the final evaluate message (the float32 trunk, once per run) spread over the rounds.
With `--repeats N` the chosen modes run N times, interleaved (A B C, A B C, ...), so load that drifts during the
benchmark spreads over every mode alike; medians are over all rounds of all repeats, and each run's load average
is printed.
and prints per round: wall time (median over rounds), the slowest partner's own compute (training + selection
scoring, measured inside the partner: `model/federated/rounds.jsonl`), their ratio against the issue's target
(deployed <= 1.2 x slowest partner + 5 s; SecAgg+ <= 2 x plain) and the bytes each partner sends/receives per
round. Every mode runs in this one invocation on this machine, so the ratios compare like with like.
Deployed partners share this machine's cores (`join --threads cpu_count // partners`), as partners on their
own machines would not compete; modes 3-4 run Flower with `consortium.flower_tuning`'s shorter waits.

    .venv/bin/python benchmarks/bench_federation.py [--partners APR NVS OTHERS] [--fp-size 32000]
        [--hidden 512] [--rounds 3] [--local-steps 50] [--skip-secagg] [--modes deployed ...]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consortium.certs import make_certs, make_node_keys  # noqa: E402
from consortium.deploy import ADMITTED_DIR, TlsOptions, free_port, run_deployed, start_consortium  # noqa: E402
from consortium.embedded import run_embedded  # noqa: E402
from consortium.plan import FederationSpec, Plan, TrainingSpec, TrunkSpec, trunk_shapes  # noqa: E402
from consortium.server_app import RunSettings  # noqa: E402
from data_prep.config import FingerprintConfig, PrepConfig  # noqa: E402
from data_prep.key import generate_key  # noqa: E402
from data_prep.reference import reference_hash  # noqa: E402
from partner_kit.client_app import app as partner_app  # noqa: E402
from partner_kit.federated import ROUNDS_LOG, PartnerConfig  # noqa: E402
from partner_kit.join import start_supernode  # noqa: E402
from partner_kit.simulation import prepared_dir_for  # noqa: E402

SHARED = ROOT / ".." / "shared" / "data" / "consortia" / "toxcast-6"
MODES = ("embedded", "deployed-cold", "deployed", "deployed-secagg", "deployed-tls", "deployed-tls-nofront",
         "deployed-dp", "deployed-fp16")
PY_SPY = Path("/tmp/pyspy/bin/py-spy")


def process_label(proc) -> str:
    """flower-superlink / flower-superexec / flwr-serverapp ... : the Flower console script a process runs."""
    try:
        for part in proc.cmdline()[:2]:
            base = Path(part).name
            if base.startswith(("flower-", "flwr-")):
                return base
        return proc.name()
    except Exception:  # the process ended between listing and asking
        return "?"


class ServerRss(threading.Thread):
    """Samples the RSS of a process and all its descendants (the server side) every `interval` seconds.

    Keeps the peak of their sum and each process's own peak (by Flower role; processes of one role that run
    one after another count as one). With `pyspy`, starts py-spy on the first ServerApp process it sees.
    """

    def __init__(self, root_pid: int, interval: float = 0.2, pyspy: Path | None = None) -> None:
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(root_pid)
        self.interval, self.pyspy = interval, pyspy
        self.peak_total = 0
        self.peak_by_role: dict[str, int] = {}
        self.samples = 0
        self.spy: subprocess.Popen | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except Exception:  # the SuperLink ended
            return
        total, by_role = 0, {}
        for proc in procs:
            try:
                rss = proc.memory_info().rss
            except Exception:
                continue
            role = process_label(proc)
            if role == "?":
                continue
            total += rss
            by_role[role] = by_role.get(role, 0) + rss
            if self.pyspy is not None and self.spy is None and not self._halt.is_set() and role == "flwr-serverapp":
                self.pyspy.parent.mkdir(parents=True, exist_ok=True)
                self.spy = subprocess.Popen([str(PY_SPY), "record", "-p", str(proc.pid), "--subprocesses", "-f", "raw",
                                             "-o", str(self.pyspy)], stdout=subprocess.DEVNULL,
                                            stderr=open(self.pyspy.with_suffix(".log"), "wb"))  # noqa: SIM115
        self.samples += 1
        self.peak_total = max(self.peak_total, total)
        for role, rss in by_role.items():
            self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), rss)

    def stop(self) -> dict:
        """Stop sampling (idempotent); wait for py-spy to write its file; the peaks."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)
        if self.spy is not None:  # py-spy ends with the ServerApp; give it time to write its file
            try:
                self.spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.spy.send_signal(signal.SIGINT)
                self.spy.wait(timeout=30)
            self.spy = None
        return {"server_peak_rss": self.peak_total, "server_peak_rss_by_process": dict(self.peak_by_role),
                "rss_samples": self.samples}


def partner_compute(models: dict[str, Path], rounds: int) -> list[float]:
    """Per round: the slowest partner's own compute (seconds inside fit_round)."""
    per_round: dict[int, list[float]] = {}
    for model in models.values():
        for line in (model / "federated" / ROUNDS_LOG).read_text().splitlines():
            e = json.loads(line)
            per_round.setdefault(e["round"], []).append(e["seconds_total"])
    return [max(per_round[r]) for r in range(1, rounds + 1)]


def run_mode(mode: str, plan: Plan, plan_path: Path, prepared: dict[str, Path], work: Path, rounds: int,
             reference: str = "", pyspy: Path | None = None) -> dict:
    run_dir = work / mode
    if run_dir.exists():  # a repeat: a fresh run directory and fresh partner models
        import shutil

        for old in (run_dir, work / f"models-{mode}", work / "flwr"):
            shutil.rmtree(old, ignore_errors=True)
    load = os.getloadavg()[0]
    # Deployed, the consortium admits only partners that report the reference hash of plan + key + kit.
    configs = {n: PartnerConfig(plan=plan_path, prepared=p, model=work / f"models-{mode}" / n, name=n,
                                reference_hash=reference) for n, p in prepared.items()}
    t0 = time.perf_counter()
    memory: dict = {}
    if mode == "embedded":
        status, grid = run_embedded(RunSettings(plan=plan, run_dir=run_dir, rounds=rounds, mode="embedded"),
                                    partner_app, {n: c.to_node_config() for n, c in configs.items()})
        ids = status["partners"]
        sent = statistics.mean(grid.bytes_out[ids[n]] for n in configs) / rounds
        received = statistics.mean(grid.bytes_in[ids[n]] for n in configs) / rounds
    else:
        tls, node_keys = TlsOptions(), {}
        if mode.startswith("deployed-tls"):
            certs = make_certs(work / "certs", ["127.0.0.1"], force=True)
            tls = TlsOptions(insecure=False, ca_certfile=certs.ca_cert, certfile=certs.server_cert,
                             keyfile=certs.server_key)
            (run_dir / ADMITTED_DIR).mkdir(parents=True, exist_ok=True)
            for n in configs:
                node_keys[n], public = make_node_keys(work / "nodes" / f"{n}.key", force=True)
                (run_dir / ADMITTED_DIR / f"{n}.pub").write_bytes(public.read_bytes())
        consortium = start_consortium(run_dir, flwr_home=work / "flwr" / mode, tls=tls,
                                      tls_front=mode != "deployed-tls-nofront")
        # The partners share this machine: each gets its share of the cores, as on machines of their own.
        threads = max(1, (os.cpu_count() or 1) // len(configs))
        nodes = []
        sampler = ServerRss(consortium.superlink.popen.pid, pyspy=pyspy)
        sampler.start()
        try:
            for n, c in configs.items():
                nodes.append(start_supernode(c, consortium.address, port=free_port(), log=run_dir / "logs" / f"{n}.log",
                                             flwr_home=work / "flwr" / f"{mode}-{n}", warm="cold" not in mode,
                                             threads=threads, insecure=tls.insecure,
                                             root_certificates=tls.ca_certfile, node_key=node_keys.get(n)))
            result = run_deployed(consortium, plan_path, run_dir, rounds=rounds, timeout=3600)
            memory = sampler.stop()
        finally:
            sampler.stop()
            for p in nodes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
            consortium.stop()
        status = result["status"]
        traffic = result["flower"].get("network-traffic", {})
        # Flower counts the whole run (SuperLink side); per partner and round:
        sent = traffic.get("inbound-bytes", 0) / len(configs) / rounds
        received = traffic.get("outbound-bytes", 0) / len(configs) / rounds
    wall = time.perf_counter() - t0
    compute = partner_compute({n: c.model for n, c in configs.items()}, rounds)
    return {"mode": mode, "round_seconds": status["round_seconds"], "slowest_partner": compute,
            "bytes_sent_per_partner_round": sent, "bytes_received_per_partner_round": received, "wall": wall,
            "load_before": load, "load_after": os.getloadavg()[0], **memory}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partners", nargs="+", default=["APR", "NVS", "OTHERS"])
    ap.add_argument("--fp-size", type=int, default=32000)
    ap.add_argument("--hidden", type=int, nargs="+", default=[512])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--local-steps", type=int, default=50)
    ap.add_argument("--skip-secagg", action="store_true")
    ap.add_argument("--modes", nargs="+", default=None, choices=MODES,
                    help="Run only these modes (the SecAgg+ target needs 'deployed' in the same run)")
    ap.add_argument("--work", type=Path, default=None, help="Work directory (default: a temporary one)")
    ap.add_argument("--repeats", type=int, default=1, help="Run the modes N times, interleaved")
    ap.add_argument("--dp-clip", type=float, default=1.0, help="deployed-dp: federation.dp_clipping_norm")
    ap.add_argument("--dp-sigma", type=float, default=1.0, help="deployed-dp: federation.dp_noise_multiplier")
    ap.add_argument("--pyspy", type=Path, default=None,
                    help="Record each deployed run's ServerApp with py-spy into this directory (raw stacks)")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-fed-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    plan = Plan(name="bench-federation", data=PrepConfig(fingerprint=FingerprintConfig(size=args.fp_size)),
                trunk=TrunkSpec(hidden_sizes=list(args.hidden)), training=TrainingSpec(),
                federation=FederationSpec(rounds=args.rounds, local_steps=args.local_steps,
                                          min_partners=len(args.partners)))
    plan_path = plan.save(work / "plan.toml")
    key = work / "secret.key"
    if not key.exists():
        generate_key(key)
    prepared = {}
    for name in args.partners:
        prepared[name], _ = prepared_dir_for(SHARED / name, plan, plan_path, key, work / "prepared" / name,
                                             progress=False)
    params = sum(int(__import__("math").prod(s)) for s in trunk_shapes(plan).values())
    modes = [("embedded", plan), ("deployed-cold", plan), ("deployed", plan), ("deployed-tls", plan),
             ("deployed-tls-nofront", plan)]
    if not args.skip_secagg:
        secagg = dataclasses.replace(plan, federation=dataclasses.replace(plan.federation, secure_aggregation=True))
        modes.append(("deployed-secagg", secagg))
    dp = dataclasses.replace(plan, federation=dataclasses.replace(
        plan.federation, dp_enabled=True, dp_clipping_norm=args.dp_clip, dp_noise_multiplier=args.dp_sigma))
    modes.append(("deployed-dp", dp))
    fp16 = dataclasses.replace(plan, federation=dataclasses.replace(plan.federation, wire_dtype="float16"))
    modes.append(("deployed-fp16", fp16))
    optional = ("deployed-dp", "deployed-tls-nofront", "deployed-fp16")  # only when asked for
    modes = [(m, p) for m, p in modes if (args.modes is None and m not in optional) or m in (args.modes or [])]
    setups = {}
    for mode, p in modes:
        p_path = p.save(work / f"plan-{mode}.toml")
        if p is not plan:  # SecAgg+, DP, the float16 wire: plan changes, so data prepared under them
            prep = {n: prepared_dir_for(SHARED / n, p, p_path, key, work / f"prepared-{mode}" / n, progress=False)[0]
                    for n in args.partners}
        else:
            prep, p_path = prepared, plan_path
        setups[mode] = (p, p_path, prep, "" if mode == "embedded" else reference_hash(p_path, key))
    runs = []
    for rep_i in range(args.repeats):
        for mode, _ in modes:
            p, p_path, prep, reference = setups[mode]
            print(f"running {mode} (repeat {rep_i + 1}/{args.repeats}) ...", flush=True)
            spy = (None if args.pyspy is None or mode == "embedded" or rep_i > 0  # profile once: py-spy slows it
                   else args.pyspy / f"{mode}-{rep_i + 1}.txt")
            runs.append(run_mode(mode, p, p_path, prep, work, args.rounds, reference, pyspy=spy))
            peak = runs[-1].get("server_peak_rss")
            print(f"  rounds {[round(x, 1) for x in runs[-1]['round_seconds']]} s, load "
                  f"{runs[-1]['load_before']:.1f} -> {runs[-1]['load_after']:.1f}"
                  + (f", server peak RSS {peak / 2**20:.0f} MiB" if peak else ""), flush=True)
            (work / "bench_federation.partial.json").write_text(json.dumps({"runs": runs}, indent=2))  # if stopped
    results = []
    for mode, _ in modes:  # one row per mode: every round of every repeat
        mine = [r for r in runs if r["mode"] == mode]
        skip = 1 if args.rounds > 1 else 0  # round 1 also waits for the partners to connect and start up
        results.append({**mine[0], "round_seconds": [x for r in mine for x in r["round_seconds"]],
                        "slowest_partner": [x for r in mine for x in r["slowest_partner"]],
                        "steady_round_seconds": [x for r in mine for x in r["round_seconds"][skip:]],
                        "steady_slowest_partner": [x for r in mine for x in r["slowest_partner"][skip:]],
                        "wall": sum(r["wall"] for r in mine),
                        "server_peak_rss": max((r.get("server_peak_rss", 0) for r in mine), default=0),
                        "server_peak_rss_by_process": {k: max(r.get("server_peak_rss_by_process", {}).get(k, 0)
                                                              for r in mine)
                                                       for r in mine for k in r.get("server_peak_rss_by_process", {})},
                        "loads": [(round(r["load_before"], 1), round(r["load_after"], 1)) for r in mine]})

    load = os.getloadavg()
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"load average now {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")
    print(f"partners {', '.join(args.partners)} (toxcast-6); trunk {args.fp_size} x {args.hidden} = "
          f"{params / 1e6:.2f} M parameters ({params * 4 / 2**20:.1f} MiB fp32); {args.rounds} rounds x "
          f"{args.local_steps} local steps")
    plain = None
    header = (f"{'mode':<21}{'round s (median)':>17}{'slowest partner s':>19}{'target s':>10}{'ratio':>8}"
              f"{'MiB sent/partner/round':>24}{'MiB recv/partner/round':>24}")
    print(header)
    print("-" * len(header))
    for r in results:
        med = statistics.median(r["steady_round_seconds"])
        slow = statistics.median(r["steady_slowest_partner"])
        if r["mode"] == "embedded":
            target, note = None, "(partners run one after another)"
        elif r["mode"] == "deployed-cold":
            target, note = 1.2 * slow + 5.0, "(Flower default: fresh Python per message)"
        elif r["mode"] == "deployed":
            plain = med
            target, note = 1.2 * slow + 5.0, "(partner-kit join default: warm fork per message)"
        elif r["mode"] == "deployed-fp16":
            target = 1.2 * slow + 5.0
            note = "(float16 wire" + (f": {med / plain:.2f} x plain float32)" if plain else ")")
        elif r["mode"] in ("deployed-tls", "deployed-tls-nofront", "deployed-dp"):
            target = None
            what = {"deployed-tls": "TLS + node auth, TLS front", "deployed-tls-nofront": "TLS + node auth, no front",
                    "deployed-dp": "DP: clip + noise + ε"}[r["mode"]]
            note = f"({what}: {med / plain:.2f} x plain)" if plain else f"({what})"
        else:
            target, note = 2.0 * (plain or med), "(target: 2 x plain deployed)"
        ratio = f"{med / target:.2f}" if target else "-"
        tgt = f"{target:.1f}" if target else "-"
        sent, recv = r["bytes_sent_per_partner_round"] / 2**20, r["bytes_received_per_partner_round"] / 2**20
        print(f"{r['mode']:<21}{med:>17.2f}{slow:>19.2f}{tgt:>10}{ratio:>8}{sent:>24.2f}{recv:>24.2f}  {note}")
    trunk_bytes = params * 4
    print(f"\nserver side peak RSS (SuperLink + SuperExec + ServerApp, sampled every 0.2 s; one float32 trunk = "
          f"{trunk_bytes / 2**20:.1f} MiB; goal <= 4 x trunk):")
    for r in results:
        if not r.get("server_peak_rss"):
            continue
        per = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(r["server_peak_rss_by_process"].items()))
        print(f"  {r['mode']:<21} {r['server_peak_rss'] / 2**20:>7.0f} MiB = {r['server_peak_rss'] / trunk_bytes:.2f}"
              f" x trunk (per process peak MiB: {per})")
    print("\nratio = round time / target (<= 1 meets the target); medians leave out each run's round 1 (it also "
          "waits for the partners to connect and start). Per-round times:")
    for r in results:
        print(f"  {r['mode']:<21} rounds {[round(x, 1) for x in r['round_seconds']]}, slowest partner "
              f"{[round(x, 1) for x in r['slowest_partner']]}, total {r['wall']:.0f} s, load before -> after "
              f"{r.get('loads')}")
    (work / "bench_federation.json").write_text(json.dumps({"modes": results, "runs": runs}, indent=2))
    print(f"\nraw numbers: {work / 'bench_federation.json'}")


if __name__ == "__main__":
    main()
