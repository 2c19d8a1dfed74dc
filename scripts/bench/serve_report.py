#!/usr/bin/env python3
"""The report of one scripts/bench_serve.sh run: reads the run's folder (meta.env,
indexes.tsv, and per index the wrk outputs, /metrics snapshots, memory samples, stage costs
and server logs), writes RESULTS/results.json with every figure and RESULTS/table.md (the
side-by-side tables in Markdown, for the README), and prints the tables.

    scripts/bench/serve_report.py RESULTS_DIR

Ratios: "req/s ratio" is mmsearch's requests/s over the peer's; "p99 ratio" is mmsearch's p99
latency over the peer's (below 1: mmsearch is faster). Failures are non-2xx responses plus
socket errors (connect, read, write, timeout), as wrk saw them. Python 3 standard library only.
"""
import json
import os
import re
import sys

SERVERS = ("mmsearch", "peer")
SEARCH_ROUTE = 'route="/v1/search/text"'


def read_meta(path):
    meta = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            if key:
                meta[key] = value
    return meta


def number(text):
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def read_wrk(path):
    """The RESULT, FAILURES and QUERIES lines of search_text.lua, as one dict."""
    out = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            head, _, rest = line.strip().partition(" ")
            if head not in ("RESULT", "FAILURES", "QUERIES"):
                continue
            for field in rest.split():
                key, _, value = field.partition("=")
                if head == "FAILURES" and key != "statuses":
                    key = "failures" if key == "total" else "failed_" + key
                elif head == "FAILURES":
                    key = "failed_statuses"
                elif head == "QUERIES":
                    key = "queries_" + key
                try:
                    out[key] = number(value)
                except ValueError:
                    out[key] = value
    return out


def read_metrics(path):
    """Prometheus text: {"name{labels}": value}."""
    values = {}
    if not os.path.exists(path):
        return values
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or " " not in line:
                continue
            key, _, value = line.strip().rpartition(" ")
            try:
                values[key] = float(value)
            except ValueError:
                pass
    return values


def mean_delta(before, after, name, labels):
    """Mean of a histogram's observations between two snapshots (None when none)."""
    s = after.get("%s_sum{%s}" % (name, labels), 0) - before.get("%s_sum{%s}" % (name, labels), 0)
    n = after.get("%s_count{%s}" % (name, labels), 0) - before.get("%s_count{%s}" % (name, labels), 0)
    return s / n if n > 0 else None


def read_stages(path):
    """serve_bench stages: {stage: {batch: ms per query}}."""
    stages = {}
    if not os.path.exists(path):
        return stages
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                try:
                    stages.setdefault(parts[0], {})[parts[1]] = float(parts[2])
                except ValueError:
                    pass
    return stages


def read_mem(path):
    """A mem_sample line ("RSS_KiB PSS_KiB PROCESSES") as MiB figures."""
    with open(path, encoding="utf-8") as f:
        rss, pss, n = (int(x) for x in f.read().split()[-3:])
    return {"rss_mib": round(rss / 1024, 1), "pss_mib": round(pss / 1024, 1), "processes": n}


def read_soak_mem(path):
    samples = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            t, rss, pss, n = (int(x) for x in line.split())
            samples.append({"t_s": t, "rss_mib": round(rss / 1024, 1),
                            "pss_mib": round(pss / 1024, 1), "processes": n})
    return samples


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def batch_sizes(metrics):
    """Micro-batch size histograms of the whole session, by kind."""
    out = {}
    for kind in ("text", "search"):
        labels = 'kind="%s"' % kind
        n = metrics.get("mmsearch_batch_size_count{%s}" % labels, 0)
        if not n:
            continue
        buckets = {}
        for key, value in metrics.items():
            m = re.fullmatch(r'mmsearch_batch_size_bucket\{kind="%s",le="([^"]+)"\}' % kind, key)
            if m:
                buckets[m.group(1)] = int(value)
        out[kind] = {"batches": int(n),
                     "mean": round(metrics.get("mmsearch_batch_size_sum{%s}" % labels, 0) / n, 2),
                     "cumulative_le": buckets}
    return out


def stage_shares(stages, run):
    """Where a request's time goes at c=1, as shares of wrk's MEAN latency (means add up):
    the in-process stage medians at batch 1, the rest of the handler (the server's own mean
    time minus the stages: JSON, hand-offs) and what is outside the handler (wrk's mean minus
    the server's: socket, TCP, wrk). With one client every batch holds one job."""
    mean, server = run.get("mean_ms"), run.get("server_ms")
    try:
        parts = {"tokenize": stages["tokenize"]["1"], "text_encode": stages["encode"]["1"],
                 "faiss_search": stages["search"]["1"], "catalog_lookups": stages["resolve"]["1"]}
    except KeyError:
        return None
    if not mean or server is None:
        return None
    parts["rest_of_handler"] = server - sum(parts.values())
    parts["outside_handler"] = mean - server
    return {"mean_ms": mean,
            "ms": {k: round(v, 3) for k, v in parts.items()},
            "percent": {k: round(100 * v / mean, 1) for k, v in parts.items()}}


def peer_log_facts(path):
    text = open(path, encoding="utf-8", errors="replace").read() if os.path.exists(path) else ""
    return {"index_source": "catalog" if "images.faiss is missing or stale" in text
            else "images.faiss",
            "workers_booted": text.count("Booting worker"),
            "worker_timeouts": text.count("WORKER TIMEOUT")}


def mmsearch_statuses(path):
    counts = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for status in re.findall(r'"status":(\d+)', f.read()):
                counts[status] = counts.get(status, 0) + 1
    return counts


def index_report(results, label, requested, index_dir, meta):
    folder = os.path.join(results, label)
    info_text = open(os.path.join(folder, "index.txt"), encoding="utf-8").read()
    m = re.search(r"index: (\d+) image vectors, type (.*) \(requested", info_text)
    report = {"label": label, "requested_type": requested, "dir": index_dir,
              "vectors": int(m.group(1)) if m else None, "type": m.group(2) if m else None,
              "stages_ms_per_query": read_stages(os.path.join(folder, "stages.txt")),
              "runs": []}
    path = os.path.join(folder, "agreement.json")
    if os.path.exists(path):
        report["agreement"] = json.load(open(path, encoding="utf-8"))
    report["peer"] = peer_log_facts(os.path.join(folder, "peer.log"))
    report["mmsearch"] = {
        "server_statuses": mmsearch_statuses(os.path.join(folder, "mmsearch.log")),
        "batch_sizes": batch_sizes(read_metrics(os.path.join(folder, "mmsearch-metrics-end.txt")))}
    report["memory"] = {}
    for server in SERVERS:
        mem = {}
        for when in ("start", "end"):
            path = os.path.join(folder, "%s-mem-%s.txt" % (server, when))
            if os.path.exists(path):
                mem[when] = read_mem(path)
        report["memory"][server] = mem

    for c in meta["concurrency"].split():
        row = {"c": int(c)}
        for server in SERVERS:
            path = os.path.join(folder, "%s-c%s.txt" % (server, c))
            if not os.path.exists(path):
                continue
            run = read_wrk(path)
            if server == "mmsearch":
                before = read_metrics(os.path.join(folder, "mmsearch-c%s-metrics-before.txt" % c))
                after = read_metrics(os.path.join(folder, "mmsearch-c%s-metrics-after.txt" % c))
                d = mean_delta(before, after, "mmsearch_http_request_duration_seconds",
                               SEARCH_ROUTE)
                run["server_ms"] = round(1000 * d, 3) if d is not None else None
                for kind in ("text", "search"):
                    b = mean_delta(before, after, "mmsearch_batch_size", 'kind="%s"' % kind)
                    run["%s_batch_mean" % kind] = round(b, 2) if b is not None else None
            row[server] = run
        if "mmsearch" in row and "peer" in row:
            row["rps_ratio"] = ratio(row["mmsearch"].get("rps"), row["peer"].get("rps"))
            row["p99_ratio"] = ratio(row["mmsearch"].get("p99_ms"), row["peer"].get("p99_ms"))
        report["runs"].append(row)
        if c == "1" and "mmsearch" in row:
            report["mmsearch_stage_shares_c1"] = stage_shares(report["stages_ms_per_query"],
                                                              row["mmsearch"])
    return report


def soak_report(results, label, meta):
    folder = os.path.join(results, label)
    soak = {"index": label, "c": int(meta["soak_concurrency"]), "seconds": int(meta["soak_s"])}
    for server in SERVERS:
        path = os.path.join(folder, "%s-soak.txt" % server)
        if not os.path.exists(path):
            continue
        run = read_wrk(path)
        samples = read_soak_mem(os.path.join(folder, "%s-soak-mem.txt" % server))
        run["memory_samples"] = samples
        if samples:
            rss = [s["rss_mib"] for s in samples]
            pss = [s["pss_mib"] for s in samples]
            run["rss_mib"] = {"first": rss[0], "last": rss[-1], "max": max(rss),
                              "growth": round(rss[-1] - rss[0], 1)}
            run["pss_mib"] = {"first": pss[0], "last": pss[-1], "max": max(pss),
                              "growth": round(pss[-1] - pss[0], 1)}
        soak[server] = run
    if "mmsearch" in soak and "peer" in soak:
        soak["rps_ratio"] = ratio(soak["mmsearch"].get("rps"), soak["peer"].get("rps"))
        soak["p99_ratio"] = ratio(soak["mmsearch"].get("p99_ms"), soak["peer"].get("p99_ms"))
    return soak


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def tables(report):
    """(plain text, Markdown) of the load table and the soak table."""
    s = report["settings"]
    head = ["index", "c", "mmsearch req/s", "peer req/s", "req/s ratio",
            "mmsearch p50 / p99 ms", "peer p50 / p99 ms", "p99 ratio", "failures mmsearch / peer"]
    rows = []
    for index in report["indexes"]:
        for r in index["runs"]:
            a, b = r.get("mmsearch", {}), r.get("peer", {})
            rows.append([index["label"], str(r["c"]), fmt(a.get("rps"), ".1f"),
                         fmt(b.get("rps"), ".1f"), fmt(r.get("rps_ratio"), ".2f") + "x",
                         "%s / %s" % (fmt(a.get("p50_ms"), ".1f"), fmt(a.get("p99_ms"), ".1f")),
                         "%s / %s" % (fmt(b.get("p50_ms"), ".1f"), fmt(b.get("p99_ms"), ".1f")),
                         fmt(r.get("p99_ratio"), ".2f"),
                         "%s / %s" % (fmt(a.get("failures"), "d"), fmt(b.get("failures"), "d"))])
    soak = report.get("soak")
    soak_head = ["server", "requests", "req/s", "p50 / p99 ms", "failures",
                 "RSS MiB first -> last (max)", "PSS MiB first -> last"]
    soak_rows = []
    if soak:
        for server in SERVERS:
            r = soak.get(server)
            if not r:
                continue
            rss, pss = r.get("rss_mib", {}), r.get("pss_mib", {})
            soak_rows.append([server, fmt(r.get("requests"), "d"), fmt(r.get("rps"), ".1f"),
                              "%s / %s" % (fmt(r.get("p50_ms"), ".1f"), fmt(r.get("p99_ms"), ".1f")),
                              fmt(r.get("failures"), "d"),
                              "%s -> %s (%s)" % (rss.get("first"), rss.get("last"), rss.get("max")),
                              "%s -> %s" % (pss.get("first"), pss.get("last"))])
    m = report["machine"]
    caption = ("POST /v1/search/text, k=%s, %s distinct rotating queries, %s synthetic items; "
               "mmsearch serve --threads %s vs the peer (%s gunicorn sync workers, 1 torch/faiss "
               "thread each); wrk -t min(c, %s), %s s runs after %s s warm-ups; %s cores (%s), "
               "load average %s at start, %s at end"
               % (s["k"], report["queries"]["distinct"], s["items"], s["threads"],
                  s["peer_workers"], s["wrk_threads"], s["duration_s"], s["warmup_s"],
                  m["nproc"], m["cpu_model"], " ".join(map(str, m["load_average_start"])),
                  " ".join(map(str, m["load_average_end"]))))
    soak_caption = ("soak: %s s at c=%s per server on %s; memory sampled every 5 s (the peer's: "
                    "gunicorn master + workers)" % (soak["seconds"], soak["c"], soak["index"])
                    if soak else "")

    def plain(h, rs):
        widths = [max(len(x) for x in col) for col in zip(h, *rs)]

        def line(r):  # the first column left-aligned, the figures right-aligned
            return "  ".join(x.rjust(w) if i else x.ljust(w)
                             for i, (x, w) in enumerate(zip(r, widths)))
        return "\n".join([line(h)] + [line(r) for r in rs])

    def markdown(h, rs):
        out = ["| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rs])

    text = caption + "\n\n" + plain(head, rows)
    md = caption + "\n\n" + markdown(head, rows)
    if soak_rows:
        text += "\n\n" + soak_caption + "\n\n" + plain(soak_head, soak_rows)
        md += "\n\n" + soak_caption + "\n\n" + markdown(soak_head, soak_rows)
    return text, md


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: serve_report.py RESULTS_DIR")
    results = sys.argv[1]
    meta = read_meta(os.path.join(results, "meta.env"))
    def load(key):
        return [float(x) for x in meta.get(key, "").split()]
    report = {
        "benchmark": "scripts/bench_serve.sh: POST /v1/search/text, mmsearch serve vs the "
                     "Python peer (scripts/python/peer_service.py), wrk + "
                     "scripts/bench/search_text.lua",
        "started_utc": meta.get("started_utc"), "finished_utc": meta.get("finished_utc"),
        "git": {"commit": meta.get("git_commit"),
                "modified_tracked_files": int(meta.get("git_modified_files", 0)),
                "mmsearch_binary_mtime_utc": meta.get("mmsearch_binary_mtime_utc")},
        "machine": {"nproc": int(meta["nproc"]), "cpu_model": meta.get("cpu_model"),
                    "mem_total_mib": int(meta.get("mem_total_kib", 0)) // 1024,
                    "load_average_start": load("load_start"),
                    "load_average_end": load("load_end"),
                    "versions": meta.get("versions")},
        "settings": {key: meta[key] if key in ("model", "http_threads") else number(meta[key])
                     for key in ("model", "items", "duration_s", "warmup_s", "soak_s",
                                 "soak_concurrency", "threads", "http_threads", "peer_workers",
                                 "wrk_threads", "wrk_timeout_s", "k")},
        "queries": {"generator": "scripts/bench/make_queries.py",
                    "count": int(meta["queries_count"]),
                    "distinct": int(meta["queries_distinct"]),
                    "sha256": meta.get("queries_sha256")},
        "indexes": [],
    }
    report["settings"]["concurrency"] = [int(c) for c in meta["concurrency"].split()]
    with open(os.path.join(results, "indexes.tsv"), encoding="utf-8") as f:
        for line in f:
            label, requested, index_dir = line.rstrip("\n").split("\t")
            report["indexes"].append(index_report(results, label, requested, index_dir, meta))
    if int(meta["soak_s"]) > 0 and meta.get("soak_index"):
        report["soak"] = soak_report(results, meta["soak_index"], meta)
    with open(os.path.join(results, "results.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    text, md = tables(report)
    with open(os.path.join(results, "table.md"), "w", encoding="utf-8") as f:
        f.write(md + "\n")
    print(text)
    for index in report["indexes"]:
        agreement = index.get("agreement") or {}
        if index["peer"]["index_source"] != "images.faiss":
            print("WARNING: on %s the peer searched a Flat index built from the catalog, not "
                  "images.faiss: not the same work" % index["label"])
        if agreement and agreement.get("same_ids") != agreement.get("queries"):
            print("note: on %s mmsearch and the peer gave the same top-%s ids for %s of %s "
                  "queries (mean Jaccard %s)" % (index["label"], agreement.get("k"),
                                                 agreement.get("same_ids"),
                                                 agreement.get("queries"),
                                                 agreement.get("mean_jaccard")))
        shares = index.get("mmsearch_stage_shares_c1")
        if shares:
            print("mmsearch at c=1 on %s, shares of the mean %.2f ms: %s" % (
                index["label"], shares["mean_ms"],
                ", ".join("%s %.1f%%" % (k.replace("_", " "), v)
                          for k, v in shares["percent"].items())))
            if shares["ms"]["rest_of_handler"] < 0:
                print("  (the in-process stage medians add up to more than the server's own "
                      "time per request: they were disturbed, e.g. by other load on the machine)")
    print("\nwrote %s and %s" % (os.path.join(results, "results.json"),
                                 os.path.join(results, "table.md")))


if __name__ == "__main__":
    main()
