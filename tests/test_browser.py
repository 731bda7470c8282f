"""The interactive path in a real browser (headless Chromium driven by Selenium).

* JupyterLab: a copy of notebook 01 with the smoke parameters runs cell by cell on the project's kernel "wow" and
  shows progress bars, tables and its figure; it reuses the smoke run's cache, so it makes no model call and writes
  the same answers as the batch run.
* The smoke run's report opens from the file system with every image loaded and no console error, and so do its
  rendered notebooks. Host names do not resolve in the test browser, so any remote asset would show as an error.

Screenshots land in ``outputs/screenshots/`` (``lab.png``, ``report.png``).
"""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from wow import layout

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "outputs" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
    # no host name resolves: a page that needs the network fails loudly instead of depending on it
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
# the notebook panel of JupyterLab's main area (exposed with --LabApp.expose_app_in_browser)
_PANEL = """const app = window.jupyterapp; if (!app || !app.shell) return null; let w = null;
for (const x of app.shell.widgets('main')) { if (x.sessionContext && x.content) { w = x; break; } }
if (!w) return null;
"""
_KERNEL = (
    _PANEL
    + """const k = w.sessionContext.session && w.sessionContext.session.kernel;
return k ? {name: k.name, status: k.status} : null;"""
)
_CELLS = (
    _PANEL
    + """const cells = w.content.widgets.filter(c => c.model.type === 'code');
return {status: w.sessionContext.session.kernel.status, counts: cells.map(c => c.model.executionCount),
        errors: cells.flatMap(c => c.model.outputs.toJSON().filter(o => o.output_type === 'error')
                                    .map(o => o.ename + ': ' + o.evalue))};"""
)
_IMAGES = """return Array.from(document.images)
    .map(i => [(i.getAttribute('src') || '').slice(0, 80), i.complete, i.naturalWidth]);"""


def _chromium() -> tuple[str, str]:
    """Paths of Chromium and chromedriver. Installing them is the Makefile's job (``make test`` installs Debian's
    ``chromium`` and ``chromium-driver``, and says the browser tests skip when it cannot); the test only looks."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        absent = " and ".join(n for n, path in (("Chromium", browser), ("chromedriver", driver)) if not path)
        pytest.skip(f"{absent} not on PATH: make test installs them (apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def chromium():
    """(browser, driver) executables; skips, naming what is missing, when they are not installed."""
    pytest.importorskip("selenium", reason="selenium is not installed: make install-dev")
    return _chromium()


@pytest.fixture
def browser(chromium, tmp_path):
    """A headless Chromium with a fresh profile, its console collected (``get_log('browser')``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromium[1]))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float, every: float = 0.5):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def jupyter_lab(tmp_path):
    """A JupyterLab server on a free port of 127.0.0.1 with a token, serving ``tmp_path / "lab"``.

    Its configuration, settings, workspaces and runtime files live in ``tmp_path``; the news feed is off.
    """
    root = tmp_path / "lab"
    root.mkdir()
    settings = tmp_path / "lab-settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false"})
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
    }
    port, token = _free_port(), os.urandom(16).hex()
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ]
    log_path = tmp_path / "jupyter-lab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up():
        assert proc.poll() is None, f"jupyter lab exited:\n{log_path.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        _wait("jupyter lab to answer", up, timeout=90)
        yield {"url": url, "token": token, "root": root, "log": log_path}
    finally:
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session this fixture started: the server and its kernels
            proc.wait()


def _smoke_notebook_copy(smoke_run: Path, folder: Path, runs: Path) -> Path:
    """Notebook 01 with the smoke run's parameters injected (as papermill does), writing its run under ``runs``.

    The new run folder starts with a copy of the smoke run's cache only, so every answer must come from it.
    """
    import nbformat
    import papermill
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    src = layout.NOTEBOOK_DIR / "01_data_prep.ipynb"
    values = yaml.safe_load((smoke_run / "run.yaml").read_text())
    values["output_root"] = str(runs)
    (runs / smoke_run.name).mkdir(parents=True)
    db, copy = sqlite3.connect(smoke_run / "cache.sqlite"), sqlite3.connect(runs / smoke_run.name / "cache.sqlite")
    try:
        db.backup(copy)
    finally:
        db.close()
        copy.close()
    param_file = runs / "set.yaml"
    param_file.write_text(yaml.safe_dump(values))
    assert set(papermill.inspect_notebook(str(src))) == {"param_file"}  # the one name a notebook declares
    nb = parameterize_notebook(load_notebook_node(str(src)), {"param_file": str(param_file)})
    out = folder / src.name
    nbformat.write(nb, str(out))
    return out


def test_jupyterlab_runs_a_notebook_on_the_wow_kernel_with_widgets_tables_and_figures(
    smoke_run, jupyter_lab, browser, tmp_path
):
    runs = tmp_path / "runs"
    nb = _smoke_notebook_copy(smoke_run, jupyter_lab["root"], runs)
    browser.get(f"{jupyter_lab['url']}/lab/tree/{nb.name}?token={jupyter_lab['token']}")
    kernel = _wait("the notebook's kernel to start", lambda: browser.execute_script(_KERNEL), 120)
    assert kernel["name"] == "wow", f"the notebook runs on kernel {kernel['name']!r}, not the project's (make install)"
    _wait("the kernel to be idle", lambda: browser.execute_script(_KERNEL)["status"] == "idle", 120)

    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")

    def finished():
        state = browser.execute_script(_CELLS)
        if state["errors"]:
            return state
        return state if state["status"] == "idle" and all(c is not None for c in state["counts"]) else None

    state = _wait("every cell to run", finished, 240, every=1)
    browser.execute_script("const i = document.querySelector('.jp-OutputArea-output img'); if (i) i.scrollIntoView();")
    time.sleep(0.5)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "lab.png"))

    assert not state["errors"], state["errors"]
    figures = browser.execute_script(
        "return Array.from(document.querySelectorAll('.jp-OutputArea-output img')).map(i => i.naturalWidth);"
    )
    assert figures and all(w > 0 for w in figures), figures
    assert browser.execute_script("return document.querySelectorAll('.jp-OutputArea-output table.dataframe').length")
    bars = browser.execute_script(
        "return Array.from(document.querySelectorAll('.jp-OutputArea-output .widget-hbox'))"
        ".filter(b => b.querySelector('.widget-hprogress')).map(b => b.innerText);"
    )
    assert any("sampling" in b and "100%" in b for b in bars), bars

    # the interactive run used the batch run's cache and wrote the same answers
    interactive = runs / smoke_run.name
    assert (interactive / "answers.jsonl").read_bytes() == (smoke_run / "answers.jsonl").read_bytes()
    usage = json.loads((interactive / "usage.json").read_text())["01_data_prep"]
    assert all(u["cache_misses"] == 0 and u["completion_tokens"] == 0 for u in usage.values()), usage
    assert sum(u["cache_hits"] for u in usage.values()) > 0


def _severe(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_the_report_of_a_run_renders_offline_with_every_image(smoke_run, browser):
    page = smoke_run / "report" / "index.html"
    browser.get(page.as_uri())  # returns after the load event: every image has loaded or failed
    images = browser.execute_script(_IMAGES)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(height + 150, 12000))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "report.png"))
    errors = _severe(browser)

    assert len(images) == len(list(smoke_run.glob("*.png"))) >= 5
    assert all(width > 0 for _, _, width in images), images
    assert browser.find_element("id", "missing").text.startswith("Every stage ran")
    links = [a.get_attribute("href") for a in browser.find_elements("css selector", "a[href$='.html']")]
    assert len(links) == 5
    for link in links:  # each executed notebook, rendered: its figures load, nothing is fetched
        browser.get(link)
        imgs = browser.execute_script(_IMAGES)
        assert all(complete and width > 0 for _, complete, width in imgs), (link, imgs)
        assert browser.find_elements("css selector", ".jp-Cell"), link
        errors += _severe(browser)
    assert not errors, errors
