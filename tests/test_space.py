"""The demo Space: staged by `stentor-hub space`, pushed to the local Hub server (alone and with
`publish --space`), and run on 127.0.0.1 against a trained tiny model, driven by a real headless
Chromium (Debian's `chromium`, through Playwright)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi, SpaceCard, hf_hub_download

from stentor_hub.cli import main
from stentor_hub.helpers import FOLDER_MARKER
from stentor_hub.publish import PublishError, stage_repository
from stentor_hub.space import TESTED_VERSIONS, push_space, stage_space

sys.path.insert(0, str(Path(__file__).parent))
from test_packaging import REPO, _locked  # noqa: E402
# the local Hub server and the environment pointing at it (fixtures), and a run folder of a random model
from test_publish import TOKEN, WRONG_TOKEN, hub, hub_env, make_run_dir  # noqa: E402,F401

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROMPT = "Once upon a time"
# what the browser test types; generation must equal model.generate with these settings
SEED, TEMPERATURE, TOP_P, REPETITION_PENALTY, MAX_NEW_TOKENS = 7, 0.9, 0.8, 1.1, 20


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_model(tiny_run, tmp_path_factory) -> Path:
    """The best checkpoint of a real (short) tiny-cpu run, staged as its Hub repository would be."""
    return stage_repository(tiny_run, tmp_path_factory.mktemp("space_models") / "stentor2-tiny", repo_id="stentor/stentor2-tiny")


@pytest.fixture(scope="module")
def random_run(tmp_path_factory, tokenizer_dir) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("space_random") / "run", tokenizer_dir, seed=3)


@pytest.fixture(scope="module")
def random_model(random_run, tmp_path_factory) -> Path:
    """An untrained model of the same tokenizer: the other side of head to head."""
    return stage_repository(random_run, tmp_path_factory.mktemp("space_models") / "random-init")


def expected_continuation(model_dir: Path, prompt: str = PROMPT, temperature: float = TEMPERATURE) -> str:
    """What model.generate samples with the app's settings and seed (one thread, as the app runs)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), trust_remote_code=True).eval()
    inputs = tokenizer(prompt, return_tensors="pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(SEED)
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=True, temperature=temperature, top_p=TOP_P,
                                 repetition_penalty=REPETITION_PENALTY, max_new_tokens=MAX_NEW_TOKENS,
                                 pad_token_id=tokenizer.pad_token_id)
    finally:
        torch.set_num_threads(threads)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


# --- staging -----------------------------------------------------------------------------------


def test_staged_space_has_the_metadata_the_hub_reads(random_model, tmp_path, capsys):
    out = tmp_path / "space"
    assert main(["space", str(random_model), "stentor/other-model", "--out", str(out), "--title", "Tiny demo"]) == 0
    assert "staged the Space 'Tiny demo'" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [FOLDER_MARKER, "README.md", "app.py", "requirements.txt", "space.json"]
    card = SpaceCard((out / "README.md").read_text(), ignore_metadata_errors=False)
    assert (card.data.sdk, card.data.sdk_version, card.data.app_file) == ("gradio", TESTED_VERSIONS["gradio"], "app.py")
    assert card.data.title == "Tiny demo" and card.data.models == ["stentor/other-model"]  # a local folder is no Hub model
    assert card.data.short_description == "Sample, token probabilities, temperatures, head to head"
    assert "**Head to head**" in card.text
    requirements = [line for line in (out / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert requirements == [f"{name}=={TESTED_VERSIONS[name]}" for name in ("torch", "transformers", "numpy")]
    config = json.loads((out / "space.json").read_text())
    assert config["models"] == [{"label": "random-init", "source": str(random_model.resolve())},
                                {"label": "stentor/other-model", "source": "stentor/other-model"}]
    # the app runs on the Hub with its requirements only: no stentor_hub import
    imported = set()
    for node in ast.walk(ast.parse((out / "app.py").read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "html", "json", "threading", "dataclasses", "pathlib", "gradio", "torch", "transformers"}

    one = stage_space([str(random_model)], tmp_path / "one")  # one model: no head to head
    assert "Head to head" not in (one / "README.md").read_text()
    assert "head to head" not in SpaceCard((one / "README.md").read_text()).data.short_description


def test_tested_versions_are_the_locked_ones():
    from importlib.metadata import version

    lock = _locked(REPO / "requirements" / "lock.txt")
    for name, tested in TESTED_VERSIONS.items():
        assert lock[name] == tested, (name, lock[name], tested)
        assert version(name).split("+")[0] == tested, name  # the environment these tests run in


def test_the_package_and_space_staging_work_without_gradio(random_model, tmp_path):
    """`import stentor_hub` and `stentor-hub space` never import gradio (an optional extra)."""
    script = (
        "import sys\n"
        "class NoGradio:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'gradio': raise ImportError('gradio is not installed')\n"
        "sys.meta_path.insert(0, NoGradio())\n"
        "import stentor_hub, stentor_hub.space\n"
        "from stentor_hub.cli import main\n"
        "code = main(['space', sys.argv[1], '--out', sys.argv[2]])\n"
        "assert 'gradio' not in sys.modules\n"
        "print('EXIT', code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(random_model), str(tmp_path / "space")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "EXIT 0" in result.stdout, result.stderr[-2000:]
    assert (tmp_path / "space" / "app.py").is_file()


def test_bad_space_arguments_are_clear_errors(random_run, random_model, tmp_path, capsys):
    with pytest.raises(ValueError, match="is a training run, not a model folder; stage its repository first"):
        stage_space([str(random_run)], tmp_path / "a")
    with pytest.raises(ValueError, match="is neither a model folder nor a Hub repo id OWNER/NAME"):
        stage_space(["no-such-folder"], tmp_path / "a")
    with pytest.raises(ValueError, match="--short-description has 61 characters; the Hub accepts at most 60"):
        stage_space(["stentor/x"], tmp_path / "a", short_description="x" * 61)
    assert not (tmp_path / "a").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["space", "stentor/x", "--out", str(precious)]) == 2
    assert f"is not a previous Space staging (no {FOLDER_MARKER})" in capsys.readouterr().err
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    # a previous staging is replaced, but not once the user has added a file of their own to it
    staged = tmp_path / "staged"
    assert main(["space", "stentor/x", "--out", str(staged)]) == 0
    assert main(["space", "stentor/y", "--out", str(staged)]) == 0
    assert json.loads((staged / "space.json").read_text())["models"][0]["source"] == "stentor/y"
    (staged / "notes.txt").write_text("keep me")
    assert main(["space", "stentor/x", "--out", str(staged)]) == 2
    assert "also holds files stentor-hub did not write (notes.txt)" in capsys.readouterr().err
    assert (staged / "notes.txt").read_text() == "keep me" and "stentor/y" in (staged / "space.json").read_text()
    # a Space on the Hub cannot read a local folder: refused before anything is sent
    assert main(["space", str(random_model), "--out", str(tmp_path / "b"), "--push", "stentor/demo"]) == 2
    assert "a Space on the Hub cannot load the local folder" in capsys.readouterr().err
    assert main(["space", "stentor/x", "--out", str(tmp_path / "c"), "--push", "not-a-space-id"]) == 2
    assert "--push must be OWNER/NAME, got 'not-a-space-id'" in capsys.readouterr().err


# --- the Hub -----------------------------------------------------------------------------------


def test_hub_server_accepts_space_repositories(hub_env, tmp_path):
    import urllib.error
    import urllib.request

    api = HfApi(endpoint=hub_env.url, token=TOKEN)
    url = api.create_repo("stentor/plain-space", repo_type="space", space_sdk="gradio")
    assert url == f"{hub_env.url}/spaces/stentor/plain-space"
    (tmp_path / "app.py").write_text("print('hi')\n")
    info = api.upload_file(path_or_fileobj=tmp_path / "app.py", path_in_repo="app.py", repo_id="stentor/plain-space",
                           repo_type="space")
    assert info.commit_url.startswith(f"{hub_env.url}/spaces/stentor/plain-space/commit/")
    space = api.space_info("stentor/plain-space")
    assert space.sdk == "gradio" and {s.rfilename for s in space.siblings} == {".gitattributes", "app.py"}
    path = hf_hub_download("stentor/plain-space", "app.py", repo_type="space", cache_dir=tmp_path / "cache", endpoint=hub_env.url)
    assert Path(path).read_text() == "print('hi')\n"
    with pytest.raises(Exception, match="Repository Not Found"):
        api.model_info("stentor/plain-space")  # a Space is not a model
    request = urllib.request.Request(f"{hub_env.url}/api/repos/create", method="POST",
                                     data=json.dumps({"name": "no-sdk", "type": "space"}).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 400 and "a Space needs an sdk" in refused.value.read().decode()


def test_space_push_dry_run_and_one_commit(hub_env, tmp_path, capsys, monkeypatch):
    out = tmp_path / "space"
    before = len(hub_env.requests)
    args = ["space", "stentor/stentor2-tiny", "--out", str(out), "--push", "stentor/tiny-demo"]
    assert main([*args, "--dry-run"]) == 0
    assert len(hub_env.requests) == before and "dry run: nothing was sent to the Hub" in capsys.readouterr().out
    assert main(args) == 0
    printed = capsys.readouterr().out
    api = HfApi(endpoint=hub_env.url, token=TOKEN)
    space = api.space_info("stentor/tiny-demo")
    assert f"pushed the Space stentor/tiny-demo: {hub_env.url}/spaces/stentor/tiny-demo/commit/{space.sha}" in printed
    assert [c.title for c in api.list_repo_commits("stentor/tiny-demo", repo_type="space")] == [
        "Stage the tiny-demo Space with stentor-hub", "initial commit"]  # one commit holds the whole Space
    assert {s.rfilename for s in space.siblings} == {".gitattributes", "app.py", "space.json", "requirements.txt", "README.md"}
    assert space.sdk == "gradio" and TOKEN not in printed
    assert main(args) == 0  # the same Space again: no empty commit
    assert "already has this content; no commit made" in capsys.readouterr().out
    assert len(api.list_repo_commits("stentor/tiny-demo", repo_type="space")) == 2

    monkeypatch.setenv("HF_TOKEN", WRONG_TOKEN)
    with pytest.raises(PublishError) as refused:
        push_space(out, "stentor/other-demo")
    assert "refused the token (HTTP 401)" in str(refused.value) and WRONG_TOKEN not in str(refused.value)
    assert hub_env.branch_head("stentor/other-demo", repo_type="space") is None


def test_publish_with_space_pushes_both_and_links_the_card(hub_env, random_run, tmp_path, capsys):
    args = ["publish", str(random_run), "--repo-id", "stentor/random-init", "--space", "stentor/random-demo"]
    before = len(hub_env.requests)
    assert main([*args, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert len(hub_env.requests) == before
    assert "would push to stentor/random-init and the Space stentor/random-demo" in printed
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "pushed stentor/random-init:" in printed and "pushed the Space stentor/random-demo:" in printed
    card = Path(hf_hub_download("stentor/random-init", "README.md", cache_dir=tmp_path / "cache", endpoint=hub_env.url)).read_text()
    assert f"[stentor/random-demo]({hub_env.url}/spaces/stentor/random-demo)" in card
    space_card = SpaceCard(Path(hf_hub_download("stentor/random-demo", "README.md", repo_type="space",
                                                cache_dir=tmp_path / "cache", endpoint=hub_env.url)).read_text())
    assert space_card.data.models == ["stentor/random-init"] and space_card.data.sdk == "gradio"
    api = HfApi(endpoint=hub_env.url, token=TOKEN)
    assert len(api.list_repo_commits("stentor/random-demo", repo_type="space")) == 2
    assert main(["publish", str(random_run), "--repo-id", "stentor/random-init", "--space", "bad"]) == 2
    assert "--space must be OWNER/NAME, got 'bad'" in capsys.readouterr().err


# --- the app -----------------------------------------------------------------------------------


def load_app(space_dir: Path):
    spec = importlib.util.spec_from_file_location("staged_space_app", space_dir / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_app_streams_the_text_model_generate_samples(trained_model, tmp_path):
    import gradio as gr
    import torch

    app = load_app(stage_space([str(trained_model)], tmp_path / "space"))
    loaded = app.load_models(app.CONFIG["models"])["stentor2-tiny"]
    settings = app.Settings(TEMPERATURE, TOP_P, REPETITION_PENALTY, MAX_NEW_TOKENS, SEED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        partials = list(app.stream_text(loaded, PROMPT, settings))
        continuation, rows = app.token_table(loaded, PROMPT, settings)
    finally:
        torch.set_num_threads(threads)
    assert len(partials) > 1 and all(b.startswith(a) for a, b in zip(partials, partials[1:]))  # it streams
    assert partials[-1] == continuation == expected_continuation(trained_model)
    assert 1 <= len(rows) <= MAX_NEW_TOKENS
    for row in rows:  # from the sampler's distribution: the chosen token had a chance, alternatives sorted
        assert 0 < row["p"] <= 1 and 0 < row["model_p"] <= 1
        chances = [p for _, p in row["alternatives"]]
        assert chances == sorted(chances, reverse=True) and sum(chances) <= 1 + 1e-6
        assert row["p"] <= chances[0] + 1e-6
    for bad, message in ((dict(text=" "), "The prompt is empty"), (dict(temperature=0), "Temperature must be above 0"),
                         (dict(max_new_tokens=1000), "has a context of 256 tokens")):
        values = {**dict(text=PROMPT, temperature=1.0, top_p=0.8, repetition_penalty=1.1, max_new_tokens=20, seed=0), **bad}
        with pytest.raises(gr.Error, match=message):
            app.check_request(loaded, values.pop("text"), *values.values())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running_space(trained_model, random_model, tmp_path):
    """The staged Space with two models, started as on the Hub (`python app.py`), on 127.0.0.1."""
    space = stage_space([str(trained_model), str(random_model)], tmp_path / "space", title="Stentor2 tiny demo")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HOME=str(tmp_path / "hf"))
    log = open(tmp_path / "app.log", "w")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited ({proc.returncode}):\n{(tmp_path / 'app.log').read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() - started > 240:
                    pytest.fail(f"the app did not listen within 240 s:\n{(tmp_path / 'app.log').read_text()[-3000:]}")
                time.sleep(0.5)
        print(f"app listening after {time.monotonic() - started:.1f} s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def not_blank(path: Path) -> None:
    from PIL import Image

    image = Image.open(path).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20) or []
    assert image.width >= 800 and len(colors) > 50, f"{path.name} looks blank ({len(colors)} colours)"


def test_space_in_a_real_browser(running_space, trained_model, tmp_path):
    if CHROMIUM is None:
        pytest.fail("no chromium on PATH; install Debian's: apt-get install chromium (.ci/run does)", pytrace=False)
    from playwright.sync_api import expect, sync_playwright

    expected = expected_continuation(trained_model)
    expected_hot = expected_continuation(trained_model, temperature=1.5)
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # the page may only talk to the app: nothing leaves this machine
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(running_space) else route.abort())
        page.goto(running_space)
        expect(page.locator("#generate-run")).to_be_visible(timeout=60_000)
        page.locator("#prompt textarea").fill(PROMPT)
        page.locator("#seed input").fill(str(SEED))
        page.locator("#max_new_tokens input").fill(str(MAX_NEW_TOKENS))
        temperature = page.locator("#temperature input[type=number]")
        temperature.fill(str(TEMPERATURE))
        temperature.press("Enter")

        # generate: the streamed text is what model.generate samples with the same seed and settings
        page.locator("#generate-run").click()
        expect(page.locator("#generated textarea")).to_have_value(expected, timeout=60_000)
        page.screenshot(path=tmp_path / "generate.png", full_page=True)

        # token probabilities: one row per token, from the same sampling run
        page.get_by_role("tab", name="Token probabilities").click()
        page.locator("#probs-run").click()
        expect(page.locator("#probs-text textarea")).to_have_value(expected, timeout=60_000)
        rows = page.locator("#probs-table tr.token-row")
        assert 1 <= rows.count() <= MAX_NEW_TOKENS
        for cell in rows.locator("td.p").all_inner_texts():
            assert cell.endswith("%") and 0 < float(cell[:-1]) <= 100, cell
        page.screenshot(path=tmp_path / "probabilities.png", full_page=True)

        # temperature sweep: one output per temperature, side by side; the 0.9 one is the generated text
        page.get_by_role("tab", name="Temperature sweep").click()
        # Gradio mounts a tab's content when it is first shown, and may mount it again with the
        # default value a moment later: type until what was typed stays (a user sees it and retypes)
        temperatures = page.locator("#temperatures").locator("textarea, input").first
        wanted = f"0.5, {TEMPERATURE}, 1.5"
        for _ in range(40):
            temperatures.fill(wanted)
            page.wait_for_timeout(250)
            if temperatures.input_value() == wanted:
                break
        expect(temperatures).to_have_value(wanted)
        page.locator("#sweep-run").click()
        expect(page.locator("#sweep-2 textarea")).to_have_value(expected_hot, timeout=60_000)
        outputs = page.locator(".sweep-output:visible")
        assert outputs.count() == 3 and not page.locator("#sweep-3").is_visible()
        labels = [page.locator(f"#sweep-{i}").get_by_text(f"temperature {t}") for i, t in enumerate(("0.5", "0.9", "1.5"))]
        for label in labels:
            expect(label).to_be_visible()
        assert page.locator("#sweep-1 textarea").input_value() == expected
        assert page.locator("#sweep-0 textarea").input_value()
        boxes = [page.locator(f"#sweep-{i}").bounding_box() for i in range(3)]
        assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"] and abs(boxes[0]["y"] - boxes[2]["y"]) < 5
        page.screenshot(path=tmp_path / "sweep.png", full_page=True)

        # head to head: two columns, the trained model against the untrained one
        page.get_by_role("tab", name="Head to head").click()
        page.locator("#h2h-run").click()
        expect(page.locator("#h2h-a textarea")).to_have_value(expected, timeout=60_000)
        expect(page.locator("#h2h-b textarea")).not_to_have_value("", timeout=60_000)
        expect(page.locator("#h2h-b")).to_contain_text("B: random-init", timeout=60_000)
        a, b = page.locator("#h2h-a").bounding_box(), page.locator("#h2h-b").bounding_box()
        assert a["x"] + a["width"] <= b["x"] and abs(a["y"] - b["y"]) < 5
        assert page.locator("#h2h-b textarea").input_value() != expected
        page.screenshot(path=tmp_path / "head_to_head.png", full_page=True)

        # bad input: a message in the page, never a traceback
        page.get_by_role("tab", name="Generate").click()
        for setup, message in (
            (lambda: page.locator("#prompt textarea").fill(""), "The prompt is empty: type some text"),
            (lambda: (page.locator("#prompt textarea").fill(PROMPT), page.locator("#max_new_tokens input").fill("1000")),
             "Max new tokens is 1000, but stentor2-tiny has a context of 256 tokens"),
            (lambda: (page.locator("#max_new_tokens input").fill(str(MAX_NEW_TOKENS)), temperature.fill("0"),
                      temperature.press("Enter")), "Temperature must be above 0, got 0"),
        ):
            setup()
            page.locator("#generate-run").click()
            expect(page.get_by_text(message)).to_be_visible(timeout=30_000)
            assert "Traceback" not in page.locator("body").inner_text()
        page.screenshot(path=tmp_path / "bad_input.png")
        browser.close()
    print(f"browser session {time.monotonic() - started:.1f} s")
    for name in ("generate", "probabilities", "sweep", "head_to_head", "bad_input"):
        not_blank(tmp_path / f"{name}.png")
