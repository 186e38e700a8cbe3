"""What the bench scripts read from `evapi-sim load` reports (imported by their
inline Python): calls answered and failed over every node, and the slower node's p50
and p99 in microseconds."""
import json


def summary(work, nodes):
    """(ok, failed, p50_us, p99_us) over WORK/load-1.json ... load-NODES.json."""
    reports = []
    for i in range(1, nodes + 1):
        try:
            with open(f"{work}/load-{i}.json") as f:
                reports.append(json.load(f))
        except (OSError, ValueError):
            reports.append({})
    ok = sum(r.get('ok', 0) for r in reports)
    failed = sum(r.get('failed', 0) for r in reports)
    p50 = max(r.get('latency', {}).get('p50_us', 0) for r in reports)
    p99 = max(r.get('latency', {}).get('p99_us', 0) for r in reports)
    return ok, failed, p50, p99
