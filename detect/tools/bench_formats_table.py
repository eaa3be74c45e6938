"""The table of ``retail-detect bench --formats``: ratios against the eager rows, the goals, the printout.

A row (:func:`detect.tools.bench_formats.run_bench_formats`) is a dict with ``head``, ``model``, ``role``
(``ours`` | ``peer``), ``format`` (``torch`` | ``onnx`` | ``openvino``), ``precision``, ``ms_b1`` (thread
count as a string -> median ms of one batch-1 call), ``img_s`` / ``best_batch`` (the best of the batches, at the
most threads), ``ap`` / ``ap50`` (None when not measured), ``mb`` and, when it failed, ``error`` (and no
numbers). :func:`add_ratios` adds ``vs_eager`` (the head's own eager ms / this row's ms: a speed-up),
``vs_peer`` (this row's ms / the peer's eager ms: a latency fraction) and ``ap_delta`` (AP points against the
head's eager row).
"""

from __future__ import annotations

from detect.tables import aligned

# Issue 25's goals on a 2-core CPU: FP32 export >= 1.8x eager, INT8 >= 2.5x eager losing <= 1 AP point, an
# export's batch-1 latency <= 0.5x the torchvision peer's eager latency; each at every thread count measured.
GOALS = {"fp32_vs_eager": 1.8, "int8_vs_eager": 2.5, "int8_ap_loss_points": 1.0, "vs_peer_eager": 0.5}


def _eager(rows: list[dict], head: str, role: str) -> dict | None:
    for r in rows:
        if r["head"] == head and r["role"] == role and r["format"] == "torch" and "error" not in r:
            return r
    return None


def add_ratios(rows: list[dict]) -> None:
    """Add ``vs_eager``, ``vs_peer`` and ``ap_delta`` to every measured row (in place; see the module doc)."""
    for r in rows:
        if "error" in r:
            continue
        own, peer = _eager(rows, r["head"], r["role"]), _eager(rows, r["head"], "peer")
        r["vs_eager"] = {t: own["ms_b1"][t] / ms for t, ms in r["ms_b1"].items() if own and t in own["ms_b1"]}
        r["vs_peer"] = {t: ms / peer["ms_b1"][t] for t, ms in r["ms_b1"].items() if peer and t in peer["ms_b1"]}
        r["ap_delta"] = (100.0 * (r["ap"] - own["ap"]) if own and r["ap"] is not None and own["ap"] is not None
                         else None)


def _worst(ratios: dict[str, float], lower_is_better: bool = False) -> float | None:
    """The ratio at the thread count where it is furthest from the goal (a goal holds at every count)."""
    if not ratios:
        return None
    return max(ratios.values()) if lower_is_better else min(ratios.values())


def _best_of(rows: list[dict], key: str, lower_is_better: bool = False) -> tuple[float, dict] | None:
    scored = [(_worst(r.get(key, {}), lower_is_better), r) for r in rows]
    scored = [(v, r) for v, r in scored if v is not None]
    if not scored:
        return None
    return (min if lower_is_better else max)(scored, key=lambda vr: vr[0])


def _label(r: dict) -> str:
    return f"{r['format']} {r['precision']}"


def goals(rows: list[dict]) -> dict[str, dict]:
    """Per head of ours: each goal's verdict (``met`` True / False / None = not measured), its best row and value."""
    out: dict[str, dict] = {}
    for head in dict.fromkeys(r["head"] for r in rows if r["role"] == "ours"):
        exports = [r for r in rows if r["head"] == head and r["role"] == "ours" and r["format"] != "torch"
                   and "error" not in r]
        verdicts = {}
        best = _best_of([r for r in exports if r["precision"] == "fp32"], "vs_eager")
        verdicts["fp32_vs_eager"] = (
            {"met": best[0] >= GOALS["fp32_vs_eager"], "value": best[0], "row": _label(best[1])} if best
            else {"met": None, "value": None, "row": None})
        int8 = [r for r in exports if r["precision"] == "int8"]
        accurate = [r for r in int8 if r.get("ap_delta") is not None and -r["ap_delta"] <= GOALS["int8_ap_loss_points"]]
        best = _best_of(accurate, "vs_eager")
        if best:
            verdicts["int8_vs_eager"] = {"met": best[0] >= GOALS["int8_vs_eager"], "value": best[0],
                                         "ap_delta": best[1]["ap_delta"], "row": _label(best[1])}
        else:  # no INT8 row, or no AP to judge it by (untrained heads), or every INT8 row lost too much AP
            lost = [r for r in int8 if r.get("ap_delta") is not None]
            verdicts["int8_vs_eager"] = {"met": False if lost else None, "value": None, "row": None,
                                         "ap_delta": max((r["ap_delta"] for r in lost), default=None)}
        best = _best_of(exports, "vs_peer", lower_is_better=True)
        verdicts["vs_peer_eager"] = (
            {"met": best[0] <= GOALS["vs_peer_eager"], "value": best[0], "row": _label(best[1])} if best
            else {"met": None, "value": None, "row": None})
        out[head] = verdicts
    return out


def _cell(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _verdict(v: dict, what: str) -> str:
    if v["met"] is None:
        return f"{what}: not measured"
    value = "" if v["value"] is None else f" ({v['row']}: {v['value']:.2f}x"
    if value and v.get("ap_delta") is not None:
        value += f", AP {v['ap_delta']:+.1f} points"
    return f"{what}: {'met' if v['met'] else 'NOT met'}{value + ')' if value else ''}"


def format_table(result: dict) -> str:
    """The header (machine, load, settings), one row per head / model / format / precision, then the goals."""
    meta, st = result["meta"], result["meta"]["settings"]
    threads = [str(t) for t in st["threads"]]
    load = meta.get("load_average", {})
    lines = [f"retail-detect bench --formats on {meta['device_name']} ({meta['cpu_cores']} usable cores): size "
             + ", ".join(sorted({str(r.get('size')) for r in result['rows'] if r.get('size')})) + f"; batch-1 median "
             f"of {st['steps']} timed runs after {st['warmup']} warmup; img/s at the best of batch "
             f"{'/'.join(map(str, st['batches']))} on {max(st['threads'])} threads; load average "
             f"{_cell(load.get('start'), '.2f')} at the start, {_cell(load.get('end'), '.2f')} at the end"]
    head = ["head", "model", "format", "prec", *[f"ms b1 @{t}t" for t in threads], "img/s (batch)", "AP", "AP50",
            "dAP pts", "MB", *[f"eager/this @{t}t" for t in threads], *[f"this/peer @{t}t" for t in threads]]
    table = [head]
    for r in result["rows"]:
        cells = [r["head"], r["model"], r["format"], r["precision"]]
        if "error" in r:
            table.append(cells + [f"FAILED: {r['error']}"[:120]] + [""] * (len(head) - len(cells) - 1))
            continue
        cells += [_cell(r["ms_b1"].get(t), ".2f") for t in threads]
        cells += [f"{r['img_s']:.1f} ({r['best_batch']})", _cell(r["ap"], ".3f"), _cell(r["ap50"], ".3f"),
                  _cell(r.get("ap_delta"), "+.1f"), _cell(r["mb"], ".1f")]
        cells += [_cell(r.get("vs_eager", {}).get(t), ".2f", "x") for t in threads]
        cells += [_cell(r.get("vs_peer", {}).get(t), ".2f", "x") for t in threads]
        table.append(cells)
    # a failure's reason spans the number columns: its line is the four name columns, then the reason
    reasons = {i: row[4] for i, row in enumerate(table) if row[4].startswith("FAILED")}
    for i in reasons:
        table[i][4] = ""
    prefix = sum(max(len(row[c]) for row in table) for c in range(4)) + 2 * 4
    out = [line if i not in reasons else line[:prefix] + reasons[i]
           for i, line in enumerate(aligned(table, left=4).splitlines())]
    lines += ["", *out, ""]
    g = GOALS
    for name, v in result["goals"].items():
        lines.append(f"{name}: " + "; ".join([
            _verdict(v["fp32_vs_eager"], f"FP32 export >= {g['fp32_vs_eager']:.1f}x eager"),
            _verdict(v["int8_vs_eager"], f"INT8 >= {g['int8_vs_eager']:.1f}x eager within "
                                         f"{g['int8_ap_loss_points']:.0f} AP point"),
            _verdict(v["vs_peer_eager"], f"export <= {g['vs_peer_eager']:.1f}x the peer's eager latency")]))
    return "\n".join(lines)
