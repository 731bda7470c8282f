"""Shared test fixtures. Tests never reach the hub: HF_HUB_OFFLINE is set before anything imports transformers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the suite's two workers share the cores: their threads sleep at once (a spin, wow's default, halves a busy
# neighbour's decoding; lib/wow/__init__.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "0")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: Marker values of the secrets a run can see; no file a run writes may contain them.
SECRET_MARKERS = {
    "OPENAI_API_KEY": "sk-wowtest-MARKER-7f3a9c1e5b2d4a68",
    "HF_TOKEN": "hf_wowtestMARKER7f3a9c1e5b2d4a68",
}


#: Where the controller asks the workers to write each test's group (``make test``: ``-n 2 --dist loadgroup``).
_GROUPS_FILE = pytest.StashKey[Path]()


def _fixture_groups(items) -> dict[str, str]:
    """Test id -> group, for the tests that must share a worker: those that read one module fixture (the killed-and-
    resumed run of tests/test_reliability.py, a file's trained adapters), so that one worker builds it once. Session
    fixtures are built once per worker that needs them, except the smoke run, which the workers share (``smoke_run``):
    its tests stay spread over both. Tests in no group go to whichever worker is free."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    nodes_of = {}
    for item in items:
        nodes = []
        for name in sorted(set(item.fixturenames)):
            defs = item._fixtureinfo.name2fixturedefs.get(name)
            if defs and defs[-1].scope in ("module", "class", "package"):
                nodes.append(f"{item.path.name}::{name}")
        for node in nodes[1:]:
            parent[root(node)] = root(nodes[0])
        nodes_of[item.nodeid] = nodes
    return {nodeid: root(nodes[0]) for nodeid, nodes in nodes_of.items() if nodes}


def pytest_configure(config):
    """The controller of a ``--dist loadgroup`` run picks the file its workers write the groups to."""
    if not hasattr(config, "workerinput") and config.getoption("dist", "no") == "loadgroup":
        config.stash[_GROUPS_FILE] = Path(tempfile.mkdtemp(prefix="wow-test-groups-")) / "groups.json"


def pytest_unconfigure(config):
    if _GROUPS_FILE in config.stash:
        shutil.rmtree(config.stash[_GROUPS_FILE].parent, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist, controller: tell each worker where to write the groups."""
    if _GROUPS_FILE in node.config.stash:
        node.workerinput["wow_test_groups"] = str(node.config.stash[_GROUPS_FILE])


def pytest_collection_modifyitems(config, items):
    """pytest-xdist, worker: the groups of the collected tests, written for the controller (every worker collects
    the same tests)."""
    path = getattr(config, "workerinput", {}).get("wow_test_groups")
    if path:
        tmp = Path(f"{path}.{os.getpid()}")
        tmp.write_text(json.dumps(_fixture_groups(items)))
        os.replace(tmp, path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist, controller: ``--dist loadgroup`` sends each group of :func:`_fixture_groups` whole to one worker
    and every other test on its own, in the order collected. xdist's own ``xdist_group`` marks do
    not reach its scheduler with pytest 9.2, whose test ids no longer take xdist's suffix."""
    if _GROUPS_FILE not in config.stash:
        return None
    from xdist.scheduler import LoadScopeScheduling

    path = config.stash[_GROUPS_FILE]
    config.option.loadscopereorder = False  # the order collected: heavy tests spread among light ones

    class FixtureGroupScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first asked once every worker has collected, so the file is written
                self.groups = json.loads(path.read_text())
            return self.groups.get(nodeid, nodeid)

    return FixtureGroupScheduling(config, log)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The machine the suite ran on, just above its final count (a CI log's tail keeps it): timings and bfloat16
    results depend on the CPU family and on what ``dtype: auto`` chose there."""
    if hasattr(config, "workerinput"):
        return
    from wow.backends import precision

    terminalreporter.write_line(f"machine: {precision.machine_line()}")


@pytest.fixture(scope="session")
def default_model():
    """The offline default model and tokenizer, loaded once per test session (fp32)."""
    from wow.backends import models

    return models.load_model(models.DEFAULT_MODEL)


@pytest.fixture(scope="session")
def llama_server_process():
    """The running llama.cpp servers, one per core behind one address (:class:`wow.cli.server_pool.Pool`: ``url``,
    ``check()``), started once per test session on a free port of 127.0.0.1 and stopped at its end; the engines'
    concurrent requests are answered in parallel, each whole by one server."""
    from wow.cli.server_pool import serve_pool

    with serve_pool(workers=2) as pool:
        yield pool


@pytest.fixture(scope="session")
def llama_server(llama_server_process):
    """Base URL (without /v1) of a real llama.cpp OpenAI-compatible server serving the default model's GGUF file."""
    return llama_server_process.url


@pytest.fixture(autouse=True)
def _llama_server_alive(request):
    """A test that uses the llama.cpp server fails at once when the server has died: with its exit status or signal
    and the tail of its log, checked before and after the test (a request sent after a crash gets the same
    diagnosis as an HTTP 400, see wow.cli.llama_server), instead of a minute of retries ending in "Connection
    error"."""
    if "llama_server_process" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("llama_server_process")
    server.check()
    yield
    server.check()


@pytest.fixture(autouse=True)
def _no_reference_from_an_earlier_test():
    """Each test starts without the reference log-probabilities that earlier tests' trainings kept in this process's
    memory (wow.align.reference_logps): a test's trainings share them only among themselves."""
    from wow.align import reference_logps

    reference_logps.clear_memory()


class _LinesHandler(logging.Handler):
    """The ``wow`` log lines ``wow run`` prints in the terminal (INFO and above), kept in a list."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The folder of one whole pipeline run on parameters/smoke.yaml (a few minutes), shared by the session's tests.

    Under pytest-xdist the workers share one run: the first worker to need it builds it in their common temporary
    folder while a file lock holds the others (the run uses both cores; two builds at once took twice the machine).
    Tests read it; a test that reruns or changes a run works on a copy."""
    from filelock import FileLock  # a dependency of torch

    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None
    base = tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.getbasetemp()
    runs, done = base / "smoke-runs", base / "smoke-runs.json"
    with FileLock(str(base / "smoke-runs.lock")):
        if done.is_file():
            return Path(json.loads(done.read_text())["run_dir"])
        shutil.rmtree(runs, ignore_errors=True)  # a build that failed in another worker is not resumed
        runs.mkdir()
        run_dir = _smoke_pipeline(runs)
        done.write_text(json.dumps({"run_dir": str(run_dir)}))
        return run_dir


def _smoke_pipeline(runs: Path) -> Path:
    """``wow run parameters/smoke.yaml`` into ``runs`` with the secrets' markers set, its terminal lines kept in
    ``runs/terminal.log``."""
    from wow.cli import run

    saved = {k: os.environ.get(k) for k in [*SECRET_MARKERS, "WOW_PROGRESS_EVERY_S"]}
    os.environ.update(SECRET_MARKERS)  # a run must leave no trace of the keys it could see (tests/test_reliability.py)
    os.environ["WOW_PROGRESS_EVERY_S"] = "0"  # every progress line in the terminal (the kernels read it at start)
    terminal, wow_log = _LinesHandler(), logging.getLogger("wow")
    level = wow_log.level
    wow_log.addHandler(terminal)
    wow_log.setLevel(logging.INFO)  # as the command line sets it
    try:
        return run.run(ROOT / "parameters" / "smoke.yaml", output_root=str(runs))
    finally:
        wow_log.removeHandler(terminal)
        wow_log.setLevel(level)
        (runs / "terminal.log").write_text("\n".join(terminal.lines) + "\n")  # beside the run folder, not in it
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 2-layer, hidden-32 random Llama with the offline default model's tokenizer, saved to a folder (training
    tests: tests/test_align.py, tests/test_losses.py)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from wow.backends import models

    tok = AutoTokenizer.from_pretrained(models.default_model_path())
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    import torch

    with torch.random.fork_rng():  # the same random weights in every session (tests' set-ups read their outputs)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def one_torch_thread():
    """One torch thread while a test trains: the 2-core test machine is shared (see AlignConfig.cpu_threads)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def answer(qid, s, label, extracted=1, correct=False, gen="g"):
    """One graded answer row (the fields the pair rule and the metrics read)."""
    return {
        "answer_id": f"{qid}|{gen}|{s}",
        "question_id": qid,
        "task": "t",
        "generator": gen,
        "sample_index": s,
        "extracted": extracted,
        "raw_label": label,
        "is_correct": correct,
    }


def oracle_answers(n_questions: int = 6, per_question: int = 3) -> list[dict]:
    """Wrong shortest-path answers with distinct labels per question (training tests): each question gives
    ``per_question * (per_question - 1) / 2`` oracle pairs."""
    return [
        {
            "answer_id": f"q{q}|m|{i}",
            "question_id": f"q{q}",
            "split": "train",
            "generator": "m",
            "sample_index": i,
            "prompt_messages": [{"role": "user", "content": f"What is the shortest path weight in graph {q}?"}],
            "text": f"The total weight is {q + i + 3}.",
            "extracted": q + i + 3,
            "raw_label": -(i + 1),
            "is_correct": False,
        }
        for q in range(n_questions)
        for i in range(per_question)
    ]


def notebook_code(path: Path) -> str:
    """The code cells of a notebook as one Python source (tests/test_reliability.py, tests/test_imports.py)."""
    import json

    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    # IPython magics and shell escapes are not Python
    return "\n".join("\n".join(ln for ln in c.splitlines() if not ln.lstrip().startswith(("%", "!"))) for c in code)


def preference_pair(q: int, chosen: str, rejected: str) -> dict:
    """One preference pair in TRL's conversational format: a shortest-path question ``q`` and two answers."""
    return {
        "prompt": [{"role": "user", "content": f"What is the shortest path weight in graph {q}?"}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def _fast_training():
    from wow.align.align_config import AlignConfig

    # fp32: a resumed run can be compared with an uninterrupted one to rounding
    return AlignConfig(
        train_batch_size=1,
        learning_rate=1e-2,
        warmup_ratio=0.0,
        weight_decay=0.0,
        logging_steps=1,
        progress=False,
        cpu_threads=1,
        bf16=False,
    )


#: Settings of the tiny-model training tests: 1 pair a step, a high learning rate, float32, one thread.
FAST_TRAINING = _fast_training()
