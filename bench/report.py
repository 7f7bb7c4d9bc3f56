"""The printed table, the markdown copy, and the targets of issue 6 checked against a run."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("section", "section", 13),
    ("backend", "db", 10),
    ("mechanism", "mechanism", 13),
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


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 6: wanted, measured, met."""
    found: list[dict[str, Any]] = []

    def add(name: str, wanted: str, measured: Any, met: bool | None, note: str = "") -> None:
        found.append(
            {"target": name, "wanted": wanted, "measured": measured, "met": met, "note": note}
        )

    backends = sorted({r["backend"] for r in results["runs"] if r["section"] == "load"})
    for backend in backends:
        for mechanism in ("x509-signed", "x509-mtls", "oob-secret", "symmetric-key"):
            best = _best(results, mechanism, backend)
            ratio = best.get("cpu_over_floor")
            add(f"server CPU / floor, {mechanism}, {backend}", "<= 2.0", ratio,
                None if ratio is None else ratio <= 2.0,
                f"at the best rate, concurrency {best.get('concurrency')}")  # fmt: skip
        # Throughput: the best of one process and of the worker processes.
        every = ("load", *sorted({r["section"] for r in results["runs"]
                                  if r["section"].startswith("workers")}))  # fmt: skip
        best = _best(results, "x509-signed", backend, every)
        add(f"x509 signed, keep-alive, {backend}", ">= 1000 reg/s", best.get("rate"),
            best.get("rate", 0) >= 1000, best.get("section", ""))  # fmt: skip
        best = _best(results, "x509-mtls", backend, every)
        add(f"x509 mTLS, fresh handshake, {backend}", ">= 400 reg/s", best.get("rate"),
            best.get("rate", 0) >= 400, best.get("section", ""))  # fmt: skip
        paced = [r for r in results["runs"] if r["section"] == "paced" and r["backend"] == backend]
        if paced:
            p99 = paced[0]["p99_ms"]
            note = f"paced at {paced[0]['rate_target']} reg/s"
            add(f"p99 at half the max rate, {backend}", "<= 50 ms", p99,
                p99 is not None and p99 <= 50, note)  # fmt: skip
    for backend in backends:
        est, native = _best(results, "est-oob", backend), _best(results, "oob-secret", backend)
        if est and native and native["rate"]:
            add(f"EST simpleenroll / native oob-secret, {backend}", "-",
                round(est["rate"] / native["rate"], 2), None,
                f"{est['rate']} vs {native['rate']} reg/s, same run")  # fmt: skip
        for kind in ("ocsp-cached", "ocsp-uncached"):
            best = _best(results, kind, backend, ("ocsp",))
            if best:
                add(f"OCSP responses/s, {kind.removeprefix('ocsp-')}, {backend}", "-",
                    best["rate"], None, f"concurrency {best['concurrency']}")  # fmt: skip
    ours, peer = _best(results, "csr-imprint"), _best(results, "csr-cfssl")
    if ours and peer:
        ratio = round(ours["rate"] / peer["rate"], 2) if peer["rate"] else None
        add("CSR signing, imprint / cfssl", ">= 1.0", ratio, ratio is not None and ratio >= 1.0,
            f"{ours['rate']} vs {peer['rate']} reg/s")  # fmt: skip
    sizes = f"{results['plan']['scale_large']:,} / {results['plan']['scale_small']:,}"
    for backend, scale in results["scale"].items():
        add(f"rate with {sizes} stored, {backend}", ">= 0.90", scale.get("ratio"),
            scale.get("ratio") is not None and scale["ratio"] >= 0.9)  # fmt: skip
    imported = results.get("import")
    if imported:
        add(f"import of {imported['rows']} OOB secrets", "<= 60 s", imported["seconds"],
            imported["ok"] and imported["seconds"] <= 60,
            f"peak RSS {imported['peak_rss_mb']} MB")  # fmt: skip
    for backend, mem in results["server_memory"].items():
        add(f"server peak RSS, {backend}", "<= 200 MB", mem["peak_rss_mb"],
            mem["peak_rss_mb"] <= 200)  # fmt: skip
    return found


def render(results: dict[str, Any]) -> str:
    header = "  ".join(f"{title:>{width}}" for _, title, width in COLUMNS)
    body = [line(r) for r in _rows(results)]
    floor = results["floor"]["per_registration_us"]
    out = [header, "-" * len(header), *body, ""]
    out.append("crypto floor per registration (µs, one core): " + ", ".join(
        f"{k} {v}" for k, v in floor.items()))  # fmt: skip
    for target in results["targets"]:
        mark = {True: "met ", False: "MISS", None: "  - "}[target["met"]]
        out.append(f"[{mark}] {target['target']}: {target['measured']} (want {target['wanted']})"
                   + (f" {target['note']}" if target["note"] else ""))  # fmt: skip
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
    out += ["", "| target | wanted | measured | met | note |", "|---|---|---|---|---|"]
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        out.append(f"| {t['target']} | {t['wanted']} | {t['measured']} | {met} | {t['note']} |")
    out.append("")
    return "\n".join(out)
