"""The printed table, the markdown copy, and the targets checked against a run.

Each target names the measured value, what is wanted, the ratio it is judged by (to
the floor, to the minimal Python signer or to cfssl, all from the same run) and the
load average when its section started: on a shared machine a figure taken above
1.5 is marked noisy.
"""

from __future__ import annotations

from typing import Any

from bench.load import STEADY_AFTER_SECONDS

COLUMNS = (
    ("section", "section", 15),
    ("backend", "db", 10),
    ("mechanism", "mechanism", 17),
    ("concurrency", "conc", 4),
    ("ok", "ok", 5),
    ("errors", "err", 4),
    ("rate", "reg/s", 7),
    ("p50_ms", "p50 ms", 7),
    ("p95_ms", "p95 ms", 7),
    ("p99_ms", "p99 ms", 7),
    ("server_cpu_ms_per_reg", "cpu ms", 7),
    ("floor_ms", "floor", 6),
    ("cpu_over_floor", "x floor", 7),
    ("server_rss_mb", "RSS MB", 6),
    ("load_start", "load", 5),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"
    return str(value)


def line(row: dict[str, Any]) -> str:
    return "  ".join(f"{_cell(row.get(key)):>{width}}" for key, _, width in COLUMNS)


def _rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = list(results["runs"])
    for found in results["scale"].values():
        rows.extend(v for k, v in found.items() if k != "ratio")
    return rows


def _best(
    results: dict[str, Any],
    mechanism: str,
    backend: str | None = None,
    sections: tuple[str, ...] = ("load", "csr-sign"),
) -> dict[str, Any]:
    candidates = [
        r
        for r in results["runs"]
        if r["mechanism"] == mechanism
        and r["section"] in sections
        and (backend is None or r["backend"] == backend)
    ]
    return max(candidates, key=lambda r: r["rate"], default={})


def _beside(results: dict[str, Any], mechanism: str, backend: str | None,
            row: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The row of ``mechanism`` in ``row``'s section at ``row``'s concurrency (CPU a
    request is compared at the same concurrency), else its best."""
    for candidate in results["runs"]:
        if (candidate["mechanism"] == mechanism and candidate["section"] == row["section"]
                and candidate["concurrency"] == row["concurrency"]
                and (backend is None or candidate["backend"] == backend)):  # fmt: skip
            return dict(candidate)
    return _best(results, mechanism, backend)


def _workers_sections(results: dict[str, Any]) -> list[str]:
    """The sections of a server with several worker processes (``workers 2``)."""
    return sorted({r["section"] for r in results["runs"] if r["section"].startswith("workers")})


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: wanted, measured, the ratio it is judged by, met, and the load."""
    found: list[dict[str, Any]] = []

    def add(name: str, wanted: str, measured: Any, met: bool | None, note: str = "",
            ratio: Any = None, row: dict[str, Any] | None = None) -> None:  # fmt: skip
        load = None if row is None else row.get("load_start")
        found.append(
            {"target": name, "wanted": wanted, "measured": measured, "ratio": ratio,
             "met": met, "note": note, "load": load,
             "noisy": bool(row and row.get("noisy"))}
        )  # fmt: skip

    ours, ceiling = _best(results, "csr-imprint"), _best(results, "csr-ceiling")
    peer = _best(results, "csr-cfssl", "none")
    recording = _best(results, "csr-cfssl", "sqlite")
    if ours and ceiling:
        least = _beside(results, "csr-ceiling", None, ours).get("server_cpu_ms_per_reg")
        mine = ours.get("server_cpu_ms_per_reg")
        ratio = round(mine / least, 2) if mine and least else None
        add("CSR signing CPU per request / minimal signer's", "<= 1.5x", mine,
            ratio is not None and ratio <= 1.5,
            f"{mine} vs {least} ms, conc {ours.get('concurrency')}", ratio, ours)  # fmt: skip
        ratio = round(ours["rate"] / ceiling["rate"], 2) if ceiling["rate"] else None
        add("CSR signing rate, imprint / minimal signer", "-", ours["rate"], None,
            f"{ours['rate']} vs {ceiling['rate']} req/s", ratio, ours)  # fmt: skip
    if ours and not peer and "cfssl" in results and results["cfssl"] is None:
        add("CSR signing rate, imprint (1 worker) / cfssl", ">= 0.5x", None, None,
            "not measured: cfssl is not installed (apt-get install golang-cfssl)")  # fmt: skip
    # cfssl keeping nothing (the comparison), and cfssl keeping each certificate
    # in its SQLite certificate database (like for like).
    kept = (results.get("cfssl") or {}).get("recorded")
    for label, theirs, backend, extra in (
        ("cfssl", peer, "none", ""),
        ("cfssl -db-config", recording, "sqlite", f"; its database holds {kept} certificates"),
    ):
        if not (ours and theirs):
            continue
        if not theirs["rate"]:
            add(f"CSR signing rate, imprint (1 worker) / {label}", ">= 0.5x", None, None,
                f"not measured: {label} answered none of its requests "
                f"({theirs.get('errors')} errors)", row=theirs)  # fmt: skip
            continue
        for section in ("csr-sign", *_workers_sections(results)):
            mine = _best(results, "csr-imprint", "sqlite", (section,))
            if mine:
                ratio = round(mine["rate"] / theirs["rate"], 2)
                workers = "1 worker" if section == "csr-sign" else section
                add(f"CSR signing rate, imprint ({workers}) / {label}", ">= 0.5x", mine["rate"],
                    ratio >= 0.5, f"{mine['rate']} vs {theirs['rate']} req/s (the csr-sign "
                    f"section's cfssl){extra}", ratio, mine)  # fmt: skip
        mine_ms = ours.get("server_cpu_ms_per_reg")
        their_ms = _beside(results, "csr-cfssl", backend, ours).get("server_cpu_ms_per_reg")
        if mine_ms and their_ms:
            add(f"CSR signing CPU per request, imprint / {label}", "-", mine_ms, None,
                f"{mine_ms} vs {their_ms} ms, conc {ours.get('concurrency')}",
                round(mine_ms / their_ms, 2), ours)  # fmt: skip
    backends = sorted({r["backend"] for r in results["runs"] if r["section"] == "load"})
    bounds = {"x509-signed": 3.0, "oob-secret": 4.0, "symmetric-key": 4.0, "x509-mtls": None}
    for backend in backends:
        for mechanism, bound in bounds.items():
            best = _best(results, mechanism, backend)
            if not best:
                continue
            ratio = best.get("cpu_over_floor")
            add(f"registration CPU / crypto floor, {mechanism}, {backend}",
                "-" if bound is None else f"<= {bound:g}x", best.get("server_cpu_ms_per_reg"),
                None if ratio is None or bound is None else ratio <= bound,
                f"at the best rate, concurrency {best.get('concurrency')}", ratio,
                best)  # fmt: skip
        # Throughput: the best of one process and of the worker processes.
        every = ("load", *_workers_sections(results))
        wanted = 1000 if backend == "sqlite" else 600
        best = _best(results, "x509-signed", backend, every)
        if best:
            add(f"x509 signed, keep-alive, {backend}", f">= {wanted} reg/s", best.get("rate"),
                best.get("rate", 0) >= wanted, best.get("section", ""),
                round(best["rate"] / wanted, 2), best)  # fmt: skip
        best = _best(results, "x509-mtls", backend, every)
        if best:
            add(f"x509 mTLS, fresh handshake, {backend}", ">= 400 reg/s", best.get("rate"),
                best.get("rate", 0) >= 400, best.get("section", ""),
                round(best["rate"] / 400, 2), best)  # fmt: skip
        for section in ("paced", *(f"paced {w}" for w in _workers_sections(results))):
            paced = [r for r in results["runs"]
                     if r["section"] == section and r["backend"] == backend]  # fmt: skip
            if paced:
                p99 = paced[0]["p99_ms"]
                note = f"paced at {paced[0]['rate_target']} reg/s"
                steady = paced[0].get("p99_steady_ms")
                after = paced[0].get("steady_after_s", STEADY_AFTER_SECONDS)
                if steady is not None:
                    note += f"; p99 without its first {after:g} s: {steady} ms"
                label = "1 worker" if section == "paced" else section.removeprefix("paced ")
                add(f"p99 at half the max rate, {backend}, {label}", "<= 50 ms", p99,
                    p99 is not None and p99 <= 50, note,
                    None if p99 is None else round(p99 / 50, 2), paced[0])  # fmt: skip
    for backend in backends:
        est, native = _best(results, "est-oob", backend), _best(results, "oob-secret", backend)
        if est and native and native["rate"]:
            add(f"EST simpleenroll / native oob-secret, {backend}", "-", est["rate"], None,
                f"{est['rate']} vs {native['rate']} reg/s, same run",
                round(est["rate"] / native["rate"], 2), est)  # fmt: skip
        for kind in ("ocsp-cached", "ocsp-uncached"):
            best = _best(results, kind, backend, ("ocsp",))
            if best:
                add(f"OCSP responses/s, {kind.removeprefix('ocsp-')}, {backend}", "-",
                    best["rate"], None, f"concurrency {best['concurrency']}", None,
                    best)  # fmt: skip
    sizes = f"{results['plan']['scale_large']:,} / {results['plan']['scale_small']:,}"
    for backend, scale in results["scale"].items():
        add(f"rate with {sizes} stored, {backend}", ">= 0.90", scale.get("ratio"),
            scale.get("ratio") is not None and scale["ratio"] >= 0.9, "",
            scale.get("ratio"))  # fmt: skip
    imported = results.get("import")
    if imported:
        add(f"import of {imported['rows']} OOB secrets", "<= 60 s", imported["seconds"],
            imported["ok"] and imported["seconds"] <= 60,
            f"peak RSS {imported['peak_rss_mb']} MB")  # fmt: skip
    for backend, mem in results["server_memory"].items():
        add(f"server peak RSS per worker, {backend}", "<= 200 MB", mem["peak_rss_mb"],
            mem["peak_rss_mb"] <= 200, "one process",
            round(mem["peak_rss_mb"] / 200, 2))  # fmt: skip
    return found


def render(results: dict[str, Any]) -> str:
    header = "  ".join(f"{title:>{width}}" for _, title, width in COLUMNS)
    body = [line(r) for r in _rows(results)]
    floor = results["floor"]["per_registration_us"]
    out = [header, "-" * len(header), *body, ""]
    out.append("crypto floor per registration (µs, one core): " + ", ".join(
        f"{k} {v}" for k, v in floor.items()))  # fmt: skip
    out.append("")
    out.append(f"{'target':<58} {'wanted':>12} {'measured':>9} {'ratio':>6} {'load':>5}  met")
    for t in results["targets"]:
        mark = {True: "met", False: "MISS", None: "-"}[t["met"]]
        load = "-" if t.get("load") is None else f"{t['load']:.2f}" + ("*" if t["noisy"] else "")
        out.append(f"{t['target']:<58} {t['wanted']:>12} {_cell(t['measured']):>9} "
                   f"{_cell(t.get('ratio')):>6} {load:>5}  {mark}"
                   + (f"  ({t['note']})" if t["note"] else ""))  # fmt: skip
    out.append("load: the 1-minute load average when the section started (* above 1.5: noisy)")
    out.append(f"total {results['seconds']} s")
    return "\n".join(out)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [
        f"# Benchmark run {results['started']}{' (quick)' if results['quick'] else ''}",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['openssl_python_ssl']} (ssl), "
        f"cryptography {m['cryptography']} ({m['openssl_cryptography']}), "
        f"PostgreSQL {m.get('postgresql', '-')}, commit {m['git_commit']}. "
        f"Load average at start: {m['load_average_at_start']}.",
        "",
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in _rows(results):
        out.append("| " + " | ".join(_cell(row.get(key)) for key, _, _ in COLUMNS) + " |")
    out += ["", "| crypto primitive | µs |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in results["floor"]["primitives_us"].items()]
    out += ["", "| floor per registration | µs |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in results["floor"]["per_registration_us"].items()]
    out += ["", "| target | wanted | measured | ratio | load | met | note |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        load = "-" if t.get("load") is None else f"{t['load']}" + (" (noisy)" if t["noisy"] else "")
        out.append(f"| {t['target']} | {t['wanted']} | {_cell(t['measured'])} | "
                   f"{_cell(t.get('ratio'))} | {load} | {met} | {t['note']} |")  # fmt: skip
    out.append("")
    out.append(f"Load average at the end: {results.get('load_average_at_end')}.")
    out.append("")
    return "\n".join(out)
