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
from wow import WowError, backends, layout
from wow.backends import CachedEngine, ChatRequest, Completion, Engine
from wow.cli import commands, run
from wow.report import html_report

# a 2 x 2 red PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)
STAGES = [nb.stem for nb in layout.notebooks()]
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
    assert commands.main(["report", str(d)]) == 0
    assert (d / "report" / "index.html").exists()
    capsys.readouterr()
    assert commands.main(["report", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere is not a run folder (no run.yaml)" in err and "Traceback" not in err
    with pytest.raises(WowError, match="not a run folder"):
        html_report.write_report(tmp_path)


def test_a_failing_report_does_not_fail_the_run(tmp_path, monkeypatch, caplog):
    def broken(run_dir):
        raise RuntimeError("disk full")

    monkeypatch.setattr(html_report, "write_report", broken)
    with caplog.at_level(logging.WARNING, logger="wow.cli.run"):
        assert run.try_write_report(tmp_path) is None
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


def test_process_usage_counts_live_and_collected_engines_per_cache_file(tmp_path):
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
    # a second run in the same process (a kernel, a test session) is counted on its own cache file
    other = CachedEngine(_CountingEngine(model), tmp_path / "other" / "cache.sqlite")
    backends._track(other)
    other.generate(requests[:1])
    assert backends.process_usage(tmp_path / "cache.sqlite")[model]["completion_tokens"] == 9
    assert backends.process_usage(tmp_path / "other" / "cache.sqlite")[model]["completion_tokens"] == 3
    assert backends.process_usage()[model]["completion_tokens"] == 12
    assert backends.process_usage(tmp_path / "none.sqlite") == {}
    other.close()


def test_the_paper_checks_are_shown_beside_the_paper_in_page_and_summary(tmp_path):
    from wow.report import markdown_summary, report_content

    d = _run_folder(tmp_path)
    (d / "paper_checks.json").write_text(
        json.dumps(
            {
                "03": {"claim": "up to 20.9% above random", "source": "abstract", "status": "differs",
                       "value": 0.61234, "how": "best Acc_WoW gain over 0.5, within 0.1"},
                "01": {"claim": "625 questions per dataset", "source": "Section 3", "status": "skipped",
                       "reason": "parameters/demo.yaml is not a paper set (parameters/paper/)"},
            }
        )
    )  # fmt: skip
    content = report_content.gather_report(d)
    assert [c["stage"] for c in content["paper_checks"]] == ["01", "03"]
    markdown, page = markdown_summary.render_markdown(content), html_report.render_html(content)
    for text in ("up to 20.9% above random", "0.612", "differs", "within 0.1", "demo.yaml is not a paper set"):
        assert text in markdown and text in page, text
    assert "## Beside the paper" in markdown and 'id="paper-checks"' in page
    (d / "paper_checks.json").write_text("{not json")
    assert "paper_checks.json could not be read" in " ".join(report_content.gather_report(d)["missing"])
    (d / "paper_checks.json").unlink()
    content = report_content.gather_report(d)
    assert content["paper_checks"] == [] and "Beside the paper" not in markdown_summary.render_markdown(content)


def test_summary_and_html_page_render_the_same_gathered_content(tmp_path):
    from wow.report import markdown_summary, report_content

    d = _run_folder(tmp_path, protocol="paper", tasks=["t"], n_questions=3, n_samples=2, generators=["g"])
    (d / "acc_wow.csv").write_text(
        "task,generator,split,method,judge,check,margin,n_pairs,acc_wow,ci_low,ci_high,note\n"
        "t,g,train,oracle,,none,1.0,12,1.0,1.0,1.0,\n"
        "t,g,train,length,,none,1.0,12,0.5833,0.3333,0.8333,\n"
        "t,g,train,length,,none,0.5,6,0.6667,0.3333,1.0,\n"
    )
    (d / "alignment.csv").write_text(
        "setting,task,before_p_wrong,after_p_wrong,d_p_wrong,d_p_wrong_ci_low,d_p_wrong_ci_high,d_acc,neg_d_ece,"
        "d_p_wrong_mde,d_p_wrong_equiv_bound\n"
        "self_oracle,t,0.25,0.3125,0.0625,-0.01,0.14,0.05,-0.02,0.107,0.121\n"
    )
    (d / "fig3_slopes.csv").write_text(
        "gain,n_settings,n_questions,slope,ci_low,ci_high,mde\nd_p_wrong,5,36,0.0412,-0.083,0.171,0.1817\n"
    )
    (d / "usage.json").write_text(
        json.dumps({STAGES[1]: {"gpt-4o": {"calls": 7, "prompt_tokens": 1500, "cost_usd": 0.5}}})
    )
    (d / "fig_acc_wow.png").write_bytes(PNG)

    content = report_content.gather_report(d)
    markdown, page = markdown_summary.render_markdown(content), html_report.render_html(content)
    numbers = [
        "0.583 [0.333, 0.833]",  # length at M = 1.0, with its CI
        "1.000 [1.000, 1.000]",  # the oracle
        "0.250 → 0.312",  # p_wrong before -> after
        "0.062 [-0.010, 0.140]",  # Δp_wrong with its CI
        "0.107",  # the true Δp_wrong the design detects with 80% power
        "true Δp_wrong detected with 80% power (design)",  # a property of the design, named as one
        "CI holds 0; Δ within ±0.121 (TOST, 5%)",  # a null result read by its own CI and equivalence bound
        "0.041 [-0.083, 0.171]",  # Fig 3's slope with its CI
        "0.182",  # the true slope the design detects with 80% power
        "Its 95% CI carries: test questions",  # which sources of variance the slope's CI holds
        "1,500",  # tokens of stage 02
        "$0.50",  # its API cost
        "train questions",  # the split Acc_WoW was computed on
        "no ci_resample column",  # a table that does not say what its CIs resampled
        "fig_acc_wow",
    ]
    for text in numbers:
        assert text in markdown and text in page, text
    assert "0.667" not in markdown and "0.667" not in page  # M = 0.5 rows are not shown
    # the verdict the terminal prints, in both renderings: no gain's CI [-0.010, 0.140] excludes 0
    from wow.report import verdict

    assert content["verdict"] == verdict.verdict_lines(d) and content["verdict"][-1] in verdict.results_text(d)
    assert content["verdict"][-1].endswith("excludes 0: at this size the test questions show no change")
    for text in ("## Verdict", content["verdict"][-1]):
        assert text in markdown
    assert 'id="verdict"' in page and "excludes 0: at this size the test questions show no change" in page
    assert "Protocol `paper`" in markdown and "Protocol: <code>paper</code>" in page
    assert "Tasks t; 3 questions per task, 2 answers each from g" in markdown and "Tasks t; 3 questions" in page

    assert content["acc"]["rows"][0][2] == "length"  # rows sorted by task, generator, method
    content["acc"]["rows"][0][-1] = "0.123 [0.045, 0.678]"  # one value changed in the content shows in both
    content["total"]["cost"] = "$9.87"
    for rendered in (markdown_summary.render_markdown(content), html_report.render_html(content)):
        assert "0.123 [0.045, 0.678]" in rendered and "$9.87" in rendered
        assert "0.583 [0.333, 0.833]" not in rendered

    written = html_report.write_report(d).read_text()
    assert "0.583 [0.333, 0.833]" in written and not _broken_links(d / "report" / "index.html")


T0 = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC
LOCAL, API = ("transformers", "smollm2-135m"), ("openai", "gpt-4o")


def _attempt(start: float, end: float | None, status: str) -> dict:
    import datetime as dt

    def iso(offset):
        return dt.datetime.fromtimestamp(T0 + offset, dt.timezone.utc).isoformat(timespec="seconds")

    seconds = None if end is None else end - start
    return {"status": status, "start": iso(start), "end": None if end is None else iso(end), "seconds": seconds}


def _put(cache, key: str, offset: float, where: tuple, value: dict, kind: str = "generate") -> None:
    """Store a call as the real cache does, then date it ``offset`` seconds after T0."""
    cache.put(key, value, kind, *where)
    cache._db.execute("UPDATE calls SET created = ? WHERE key = ?", (T0 + offset, key))


def _tokens(prompt: int, completion: int) -> dict:
    return {"text": "x", "prompt_tokens": prompt, "completion_tokens": completion}


def _cached_run(tmp_path: Path) -> Path:
    """Stage 1 killed after two calls and resumed (one more call), stage 2 (an API call and a choice-logprob call),
    then a warm rerun that computed nothing: its usage.json says 0 calls."""
    from wow.backends.cache import CallCache

    d = _run_folder(tmp_path)
    cache = CallCache(d / "cache.sqlite")
    _put(cache, "a", 10, LOCAL, _tokens(100, 20))
    _put(cache, "b", 40, LOCAL, _tokens(200, 30))
    _put(cache, "c", 120, LOCAL, _tokens(50, 5))
    _put(cache, "d", 210, LOCAL, {"A": -0.1, "B": -2.3}, kind="choice_logprobs")
    _put(cache, "e", 215, API, _tokens(200_000, 50_000))
    cache.close()
    attempts = {
        STAGES[0]: [_attempt(0, None, "running"), _attempt(100, 160, "done")],  # killed, then resumed
        STAGES[1]: [_attempt(200, 230, "done")],
    }
    (d / "stages.json").write_text(json.dumps(attempts))
    warm = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cache_hits": 4, "cache_misses": 0}
    (d / "usage.json").write_text(json.dumps({STAGES[0]: {"smollm2-135m": warm}, STAGES[1]: {"gpt-4o": warm}}))
    return d


def _cost_table(content: dict) -> dict:
    rows = {s["name"]: [s[k] for k in ("compute", "calls", "tokens", "cost")] for s in content["stages"]}
    return {**rows, "total": [content["total"][k] for k in ("compute", "calls", "tokens", "cost")]}


def test_the_cost_table_counts_every_call_of_the_run_from_the_cache(tmp_path):
    import hashlib

    from wow.report import markdown_summary, report_content

    d = _cached_run(tmp_path)
    before = hashlib.sha256((d / "cache.sqlite").read_bytes()).hexdigest()
    files = sorted(p.name for p in d.iterdir())
    content = report_content.gather_report(d)
    table = _cost_table(content)
    # stage 1: 3 calls, 100 + 20 + 200 + 30 + 50 + 5 tokens; the killed attempt up to its last call (40 s) + 60 s
    assert table[STAGES[0]] == ["1 min 40 s", "3", "405", "none (local models)"]
    # stage 2: the API call and the choice-logprob call (no tokens); 200k * $2.50/M + 50k * $10/M
    assert table[STAGES[1]] == ["30 s", "2", "250,000", "$1.00"]
    assert table["total"] == ["2 min 10 s", "5", "250,405", "$1.00"]
    models = {(u["stage"], u["model"]): u for u in content["usage_rows"]}
    assert models[(STAGES[0], "smollm2-135m")]["hits"] == "4"  # the last invocation's, from usage.json
    assert models[(STAGES[1], "smollm2-135m")]["scored"] == "1"
    assert models[(STAGES[1], "gpt-4o")]["prompt"] == "200,000" and models[(STAGES[1], "gpt-4o")]["hits"] == "4"
    markdown, page = markdown_summary.render_markdown(content), html_report.render_html(content)
    for text in (markdown, page):
        assert "every call computed in the run, whichever invocation computed it" in text
        assert "250,405" in text and "1 min 40 s" in text and "cache hits (last invocation)" in text
    # reading never touches the cache: same bytes, no lock or WAL file left next to it
    assert hashlib.sha256((d / "cache.sqlite").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in d.iterdir()) == files

    # a warm rerun of both stages (no call computed) changes nothing
    attempts = json.loads((d / "stages.json").read_text())
    attempts[STAGES[0]].append(_attempt(300, 305, "done"))
    attempts[STAGES[1]].append(_attempt(310, 312, "done"))
    (d / "stages.json").write_text(json.dumps(attempts))
    rerun = report_content.gather_report(d)
    assert _cost_table(rerun) == table
    assert [s["time"] for s in rerun["stages"][:2]] == ["5 s", "2 s"]  # the latest attempt's wall time


def test_calls_of_a_running_attempt_and_outside_every_attempt(tmp_path):
    from wow.backends.cache import CallCache
    from wow.report import report_compute

    d = _run_folder(tmp_path)
    cache = CallCache(d / "cache.sqlite")
    for key, offset in (("early", -50), ("a", 5), ("b", 25)):
        _put(cache, key, offset, ("transformers", "m"), _tokens(1, 1))
    # read while the cache is still open for writing (WAL mode), during the attempt
    per_stage = report_compute.stage_compute(d, {STAGES[0]: [_attempt(0, None, "running")]}, now=T0 + 30)
    cache.close()
    assert per_stage[STAGES[0]]["seconds"] == 25  # start to its last stored call
    assert per_stage[STAGES[0]]["models"]["m"]["calls"] == 2
    assert per_stage[report_compute.NO_ATTEMPT]["models"]["m"]["calls"] == 1
    assert report_compute.stage_compute(tmp_path / "nowhere", {}) == {}  # no cache: no calls
