"""The self-contained HTML report of `vlab rag eval`: a table and a seaborn plot embedded as a base64 PNG."""

from __future__ import annotations

import base64
import io
import platform
from datetime import UTC, datetime
from pathlib import Path

from rag.evaluate import EvalResult

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
 table { border-collapse: collapse; margin: 1rem 0; }
 th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: right; }
 th:first-child, td:first-child { text-align: left; }
 th { background: #f3f3f3; }
 img { max-width: 100%; }
 .meta { color: #666; font-size: .9rem; }
</style></head>
<body>
<h1>{{ title }}</h1>
<p class="meta">{{ questions }} labelled questions, corpus {{ corpus }}, generated {{ generated }} on {{ machine }}.
A hit at k: one of the top-k chunks comes from the labelled file and page. Latency: one retrieve() call
(embedding the question + vector search), milliseconds.</p>
<table>
<thead><tr><th>config</th><th>chunks</th>{% for k in ks %}<th>hit@{{ k }}</th>{% endfor %}
<th>mean ms</th><th>p95 ms</th><th>ingest s</th></tr></thead>
<tbody>
{% for r in results %}<tr><td>{{ r.config.label }}</td><td>{{ r.chunks }}</td>
{% for k in ks %}<td>{{ "%.2f"|format(r.hit_rate[k]) }}</td>{% endfor %}
<td>{{ "%.1f"|format(r.mean_latency_ms) }}</td><td>{{ "%.1f"|format(r.p95_latency_ms) }}</td>
<td>{{ "%.2f"|format(r.ingest_s) }}</td></tr>
{% endfor %}</tbody></table>
<img alt="hit rate at k and mean retrieval latency per chunking configuration" src="data:image/png;base64,{{ plot }}">
</body></html>
"""


def plot_png(results: list[EvalResult], ks: list[int]) -> bytes:
    """Hit rate@k (grouped bars) and mean latency per configuration, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    hits = pd.DataFrame(
        [{"config": r.config.label, "k": f"k={k}", "hit rate": r.hit_rate[k]} for r in results for k in ks]
    )
    latency = pd.DataFrame([{"config": r.config.label, "mean latency (ms)": r.mean_latency_ms} for r in results])
    sns.set_theme(style="whitegrid")
    fig, (ax_hits, ax_lat) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    sns.barplot(data=hits, x="config", y="hit rate", hue="k", ax=ax_hits)
    ax_hits.set_ylim(0, 1.2)
    ax_hits.legend(title="", ncol=len(ks), loc="upper center")
    ax_hits.set_title("Retrieval hit rate@k")
    sns.barplot(data=latency, x="config", y="mean latency (ms)", ax=ax_lat, color="#4c72b0")
    ax_lat.set_title("Mean retrieval latency")
    for ax in (ax_hits, ax_lat):
        ax.tick_params(axis="x", rotation=30)
        ax.set_xlabel("")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def write_report(path: Path, results: list[EvalResult], ks: list[int], *, questions: int, corpus: str) -> Path:
    """Render the report to `path` (folders created) and return it."""
    from jinja2 import Environment

    env = Environment(autoescape=True)
    html = env.from_string(TEMPLATE).render(
        title="RAG retrieval evaluation",
        results=results,
        ks=ks,
        questions=questions,
        corpus=corpus,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        plot=base64.b64encode(plot_png(results, ks)).decode("ascii"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
