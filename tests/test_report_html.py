"""The HTML run report on hand-made run folders (no browser): escaping, missing parts, links, offline notebooks."""

import base64
import gc
import json
import logging
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest
import yaml
from wow import WowError, backends, cli, html_report, run
from wow.backends import CachedEngine, ChatRequest, Completion, Engine

# a 2 x 2 red PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)
STAGES = [nb.stem for nb in run.notebooks()]
# what would make a page load something from the network
REMOTE = re.compile(
    r"<(?:script|img|iframe|embed|source|video|audio)\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//"
    r"|<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//"
    r"|url\(\s*[\"']?(?:https?:)?//"
    r"|@import",
    re.IGNORECASE,
)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.missing_items, self._in_missing, self._li = [], [], False, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("a", "link") and a.get("href"):
            self.links.append(a["href"])
        if tag in ("img", "script") and a.get("src"):
            self.links.append(a["src"])
        if tag == "div" and a.get("id") == "missing":
            self._in_missing = True
        if tag == "li" and self._in_missing:
            self._li = ""

    def handle_endtag(self, tag):
        if tag == "li" and self._li is not None:
            self.missing_items.append(self._li)
            self._li = None
        if tag == "div":
            self._in_missing = False

    def handle_data(self, data):
        if self._li is not None:
            self._li += data


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text())
    return parser


def _broken_links(page: Path) -> list[str]:
    """Links of the page that are not relative paths to existing files."""
    bad = []
    for href in _parse(page).links:
        url = urlparse(href)
        if url.scheme or url.netloc or not url.path:
            bad.append(href)
        elif not (page.parent / unquote(url.path)).is_file():
            bad.append(href)
    return bad


def _run_folder(tmp_path: Path, **params) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    (d / "run.yaml").write_text(yaml.safe_dump({"run_name": "t", "seed": 0, **params}, sort_keys=False))
    return d


def _notebook(path: Path, *, failed: bool = False) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "wow", "display_name": "Python (wow)", "language": "python"}
    nb.metadata["papermill"] = {"exception": True if failed else None, "end_time": "2026-01-01T00:00:00"}
    code = nbformat.v4.new_code_cell("plot()", execution_count=1)
    code.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="<b>not bold</b>\n"),
        nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(PNG).decode(), "text/plain": "f"}),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title\n\nMath $x^2$ and a [link](https://example.org)."), code]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def test_escapes_everything_and_lists_what_a_partial_run_lacks(tmp_path):
    d = _run_folder(tmp_path, run_name='<script>alert("run")</script>', tasks=["a&b"])
    (d / "acc_wow.csv").write_text(
        "task,generator,method,judge,check,margin,n_pairs,acc_wow,ci_low,ci_high,note\n"
        't,g,"<img src=x onerror=alert(1)>",,none,1.0,4,0.75,0.5,1.0,\n'
        "t,g,length,,none,0.5,2,0.5,0.0,1.0,\n"
    )
    (d / "fig a&b.png").write_bytes(PNG)
    (d / "fig a&b.pdf").write_bytes(b"%PDF-1.4\n")
    page = html_report.write_report(d)
    assert page == d / "report" / "index.html"
    text = page.read_text()
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(&#34;run&#34;)&lt;/script&gt;" in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "0.750 [0.500, 1.000]" in text  # the M = 1.0 row, with its CI
    assert "length" not in text.split('id="acc-wow"')[1].split('id="alignment"')[0]  # M = 0.5 rows are not shown
    missing = " | ".join(_parse(page).missing_items)
    for stage in STAGES:
        assert f"{stage}: not run" in missing
    for name in ("alignment.csv", "timings.json", "usage.json"):
        assert name in missing
    assert "acc_wow.csv" not in missing
    assert "No alignment.csv yet" in text
    assert 'src="../fig%20a%26b.png"' in text and 'href="../fig%20a%26b.pdf"' in text
    assert not _broken_links(page)
    assert not REMOTE.search(text)


def test_an_empty_run_folder_still_renders_and_says_so(tmp_path):
    d = _run_folder(tmp_path)
    text = html_report.write_report(d).read_text()
    assert "Partial run" in text and "no PNG files" in text and "No acc_wow.csv yet" in text
    assert not _broken_links(d / "report" / "index.html")


def test_executed_notebooks_are_rendered_without_network_and_failures_are_shown(tmp_path):
    d = _run_folder(tmp_path)
    _notebook(d / "notebooks" / f"{STAGES[0]}.ipynb")
    _notebook(d / "notebooks" / f"{STAGES[1]}.ipynb", failed=True)
    (d / "timings.json").write_text(json.dumps({STAGES[0]: 65.4, STAGES[1]: 3.0}))
    page = html_report.write_report(d)
    text = page.read_text()
    rendered = sorted(p.name for p in (d / "report" / "notebooks").iterdir())
    assert rendered == [f"{STAGES[0]}.html", f"{STAGES[1]}.html"]
    for name in rendered:
        html = (d / "report" / "notebooks" / name).read_text()
        assert not REMOTE.search(html), REMOTE.search(html)
        assert "data:image/png;base64," in html and "&lt;b&gt;not bold&lt;/b&gt;" in html
    assert f'href="notebooks/{STAGES[0]}.html"' in text and f'href="../notebooks/{STAGES[0]}.ipynb"' in text
    assert "1 min 05 s" in text
    missing = " | ".join(_parse(page).missing_items)
    assert f"{STAGES[1]}: failed" in missing and f"{STAGES[0]}:" not in missing
    assert not _broken_links(page)


def test_tokens_and_cost_are_summed_per_stage_and_in_total(tmp_path):
    d = _run_folder(tmp_path)
    local = {"calls": 10, "prompt_tokens": 1000, "completion_tokens": 234, "cache_hits": 5, "cache_misses": 10}
    api = {**local, "cost_usd": 1.25}
    (d / "usage.json").write_text(
        json.dumps({STAGES[0]: {"smollm2-135m": local}, STAGES[1]: {"gpt-4o": api, "other-api": {"cost_usd": None}}})
    )
    text = html_report.write_report(d).read_text()
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"<tr><td>([^<]+)</td><td class=\"status[^\n]*\n.*?</tr>", text, re.S)
    }
    assert "1,234" in rows[STAGES[0]] and "none (local models)" in rows[STAGES[0]]
    assert "1,234" in rows[STAGES[1]] and "unknown prices (+ $1.25 known)" in rows[STAGES[1]]
    total = text.split('<tr class="total">')[1].split("</tr>")[0]
    assert "2,468" in total and "20" in total and "unknown prices (+ $1.25 known)" in total


def test_wow_report_command(tmp_path, capsys):
    d = _run_folder(tmp_path)
    assert cli.main(["report", str(d)]) == 0
    assert (d / "report" / "index.html").exists()
    capsys.readouterr()
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere is not a run folder (no run.yaml)" in err and "Traceback" not in err
    with pytest.raises(WowError, match="not a run folder"):
        html_report.write_report(tmp_path)


def test_a_failing_report_does_not_fail_the_run(tmp_path, monkeypatch, caplog):
    def broken(run_dir):
        raise RuntimeError("disk full")

    monkeypatch.setattr(html_report, "write_report", broken)
    with caplog.at_level(logging.WARNING, logger="wow.run"):
        assert run.write_report(tmp_path) is None
    assert "the run report was not written (RuntimeError: disk full)" in caplog.text


class _CountingEngine(Engine):
    name = "counting"

    def __init__(self, model):
        super().__init__(model)
        self.n = 0

    def _generate(self, requests, progress):
        self.n += len(requests)
        return [Completion(text="ok", prompt_tokens=7, completion_tokens=3) for _ in requests]

    def usage(self):
        return {"calls": self.n, "prompt_tokens": 7 * self.n, "completion_tokens": 3 * self.n}


def test_process_usage_counts_live_and_collected_engines(tmp_path):
    model = "usage-test-model"
    requests = [ChatRequest(messages=[{"role": "user", "content": f"q{i}"}], max_tokens=4) for i in range(3)]
    engine = CachedEngine(_CountingEngine(model), tmp_path / "cache.sqlite")
    backends._track(engine)
    engine.generate(requests)
    engine.generate(requests)  # served from the cache: no new tokens
    assert backends.process_usage()[model] == {
        "calls": 3,
        "prompt_tokens": 21,
        "completion_tokens": 9,
        "cache_hits": 3,
        "cache_misses": 3,
    }
    engine.close()
    del engine
    gc.collect()
    assert backends.process_usage()[model]["completion_tokens"] == 9  # kept after the engine is gone
