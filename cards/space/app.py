"""A demo of Stentor2 language models in four modes: generation, token probabilities, a
temperature sweep and (with two models or more) head to head.

Staged by `stentor-hub space`; runs on a Hugging Face Space or locally with `python app.py`
(GRADIO_SERVER_NAME / GRADIO_SERVER_PORT choose where it listens). It needs only its
requirements.txt and Gradio, not stentor-hub. The models it offers are listed in space.json
beside it; each loads with the Auto classes and trust_remote_code=True (the tokenizer is
TokenMonster in pure Python, shipped in the model repository).
"""

from __future__ import annotations

import html
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

CONFIG = json.loads((Path(__file__).resolve().parent / "space.json").read_text(encoding="utf-8"))
SWEEP_SLOTS = 4  # the temperature sweep shows at most this many outputs side by side
TOP_ALTERNATIVES = 5  # the probability explorer lists this many candidates per step
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class LoadedModel:
    label: str
    tokenizer: object
    model: object

    @property
    def context(self) -> int:
        return int(self.model.config.max_position_embeddings)


def load_models(entries: list[dict]) -> dict[str, LoadedModel]:
    """label -> model, in the order of space.json; ``source`` is a Hub repo id or a folder."""
    loaded = {}
    for entry in entries:
        tokenizer = AutoTokenizer.from_pretrained(entry["source"], trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained(entry["source"], trust_remote_code=True).to(DEVICE).eval()
        loaded[entry["label"]] = LoadedModel(entry["label"], tokenizer, model)
    return loaded


# --- sampling --------------------------------------------------------------------------------


@dataclass
class Settings:
    temperature: float
    top_p: float
    repetition_penalty: float
    max_new_tokens: int
    seed: int

    def generate_kwargs(self, tokenizer) -> dict:
        """What model.generate gets: the same call whichever mode runs, so one seed gives one text."""
        return dict(do_sample=True, temperature=self.temperature, top_p=self.top_p,
                    repetition_penalty=self.repetition_penalty, max_new_tokens=self.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id)


def _number(value, name: str) -> float:
    if value is None or value == "":
        raise gr.Error(f"{name} is empty; enter a number.", print_exception=False)
    return float(value)


def check_request(loaded: LoadedModel, prompt: str, temperature, top_p, repetition_penalty, max_new_tokens,
                  seed) -> Settings:
    """The settings, or a message in the page (gr.Error) saying what is wrong and what to enter."""
    if not prompt or not prompt.strip():
        raise gr.Error("The prompt is empty: type some text for the model to continue.", print_exception=False)
    settings = Settings(_number(temperature, "Temperature"), _number(top_p, "Top-p"),
                        _number(repetition_penalty, "Repetition penalty"),
                        int(_number(max_new_tokens, "Max new tokens")), int(_number(seed, "Seed")))
    check_temperature(settings.temperature)
    if not 0 < settings.top_p <= 1:
        raise gr.Error(f"Top-p must be in (0, 1], got {settings.top_p:g}.", print_exception=False)
    if settings.repetition_penalty <= 0:
        raise gr.Error(f"Repetition penalty must be above 0 (1 means none), got {settings.repetition_penalty:g}.",
                       print_exception=False)
    prompt_tokens = len(loaded.tokenizer(prompt)["input_ids"])
    room = loaded.context - prompt_tokens
    if settings.max_new_tokens < 1:
        raise gr.Error(f"Max new tokens must be at least 1, got {settings.max_new_tokens}.", print_exception=False)
    if settings.max_new_tokens > room:
        raise gr.Error(f"Max new tokens is {settings.max_new_tokens}, but {loaded.label} has a context of "
                       f"{loaded.context} tokens and the prompt takes {prompt_tokens}: use at most {max(room, 0)}.",
                       print_exception=False)
    return settings


def check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise gr.Error(f"Temperature must be above 0, got {temperature:g}: sampling divides the logits by it. "
                       "Use a small value such as 0.1 for nearly greedy text.", print_exception=False)


def _inputs(loaded: LoadedModel, prompt: str):
    return loaded.tokenizer(prompt, return_tensors="pt").to(DEVICE)


def stream_text(loaded: LoadedModel, prompt: str, settings: Settings):
    """Yield the continuation as it grows, token by token (generate runs in a thread)."""
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure = []

    def run():
        try:
            torch.manual_seed(settings.seed)
            with torch.no_grad():
                loaded.model.generate(**_inputs(loaded, prompt), streamer=streamer,
                                      **settings.generate_kwargs(loaded.tokenizer))
        except Exception as e:  # reported after the stream ends; without this the loop would wait forever
            failure.append(e)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text
    thread.join()
    if failure:
        raise failure[0]


def sample_text(loaded: LoadedModel, prompt: str, settings: Settings) -> str:
    text = ""
    for text in stream_text(loaded, prompt, settings):
        pass
    return text


def token_table(loaded: LoadedModel, prompt: str, settings: Settings) -> tuple[str, list[dict]]:
    """The continuation and one row per generated token: the token, the probability the sampler drew it with, the
    model's own probability for it and the most likely alternatives, all from the logits of that
    step (``scores``: after repetition penalty, temperature, top-k and top-p, which is what
    sampling draws from; ``logits``: as the model gave them)."""
    inputs = _inputs(loaded, prompt)
    torch.manual_seed(settings.seed)
    with torch.no_grad():
        out = loaded.model.generate(**inputs, output_scores=True, output_logits=True, return_dict_in_generate=True,
                                    **settings.generate_kwargs(loaded.tokenizer))
    new_tokens = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    rows = []
    for step, token in enumerate(new_tokens):
        sampled_from = torch.softmax(out.scores[step][0].float(), dim=-1)
        model_probs = torch.softmax(out.logits[step][0].float(), dim=-1)
        top = torch.topk(sampled_from, TOP_ALTERNATIVES)
        rows.append({
            "token": loaded.tokenizer.decode([token]),
            "p": float(sampled_from[token]),
            "model_p": float(model_probs[token]),
            "alternatives": [(loaded.tokenizer.decode([i]), float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())
                             if p > 0],
        })
    return loaded.tokenizer.decode(new_tokens, skip_special_tokens=True), rows


# --- the page ----------------------------------------------------------------------------------


def _show_token(text: str) -> str:
    """A token as a visible string: spaces and newlines would vanish in a table cell, and other
    invisible characters are written as their code point."""
    # "\x7f" is TokenMonster's delete marker, which a token decoded alone may keep (tokenmonster SPEC)
    shown = "".join("␣" if ch == " " else "\\n" if ch == "\n" else "⌫" if ch == "\x7f" else ch if ch.isprintable()
                    else f"\\u{ord(ch):04x}" for ch in text)
    return html.escape(shown)


def _percent(p: float) -> str:
    """1.2% or 0.0034%: three significant digits, so small probabilities do not all read 0.0%."""
    return f"{p:.1%}" if p >= 0.01 else f"{p * 100:.2g}%"


def render_token_table(rows: list[dict]) -> str:
    body = []
    for step, row in enumerate(rows, 1):
        alternatives = " ".join(
            f'<span class="alt{" chosen" if text == row["token"] else ""}">{_show_token(text)} {_percent(p)}</span>'
            for text, p in row["alternatives"])
        shade = f"rgba(255, 160, 0, {0.15 + 0.6 * row['p']:.2f})"
        body.append(f'<tr class="token-row"><td>{step}</td><td class="token" style="background:{shade}">'
                    f'{_show_token(row["token"])}</td><td class="p">{_percent(row["p"])}</td>'
                    f'<td class="model-p">{_percent(row["model_p"])}</td><td>{alternatives}</td></tr>')
    return ('<table class="token-probs"><thead><tr><th>#</th><th>token</th><th>p (sampled with)</th>'
            '<th>model p</th><th>top alternatives (p sampled with)</th></tr></thead><tbody>'
            + "".join(body) + "</tbody></table>")


def parse_temperatures(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise gr.Error(f"Temperatures must be numbers separated by commas, like 0.5, 1.0, 1.5; got {text!r}.",
                       print_exception=False) from None
    if not values:
        raise gr.Error("Enter at least one temperature, like 0.5, 1.0, 1.5.", print_exception=False)
    if len(values) > SWEEP_SLOTS:
        raise gr.Error(f"At most {SWEEP_SLOTS} temperatures at a time; got {len(values)}.", print_exception=False)
    for value in values:
        check_temperature(value)
    return values


CSS = """
.token-probs { border-collapse: collapse; font-size: 0.9em; }
.token-probs td, .token-probs th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
.token-probs .token { font-family: monospace; }
.token-probs .alt { font-family: monospace; margin-right: 0.8em; }
.token-probs .alt.chosen { font-weight: bold; }
"""


def build_demo(models: dict[str, LoadedModel], title: str) -> gr.Blocks:
    labels = list(models)
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {html.escape(title)}\n{CONFIG.get('description', '')}")
        with gr.Row():
            model_choice = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="model")
            seed = gr.Number(0, label="Seed (same seed and settings, same text)", precision=0, elem_id="seed")
        prompt = gr.Textbox("Once upon a time", label="Prompt", lines=2, elem_id="prompt")
        with gr.Row():
            temperature = gr.Slider(0, 2, value=1.0, step=0.05, label="Temperature", elem_id="temperature")
            top_p = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="Top-p", elem_id="top_p")
            repetition_penalty = gr.Slider(1.0, 2.0, value=1.1, step=0.05, label="Repetition penalty",
                                           elem_id="repetition_penalty")
            max_new_tokens = gr.Number(40, label="Max new tokens", precision=0, elem_id="max_new_tokens")
        settings = [temperature, top_p, repetition_penalty, max_new_tokens, seed]

        with gr.Tab("Generate", elem_id="tab-generate"):
            generate_button = gr.Button("Generate", variant="primary", elem_id="generate-run")
            generated = gr.Textbox(label="Continuation", lines=6, interactive=False, elem_id="generated")

        with gr.Tab("Token probabilities", elem_id="tab-probs"):
            gr.Markdown("Each generated token with the probability it was sampled with (after repetition penalty, "
                        "temperature, top-k and top-p: the distribution the sampler drew from), the model's own "
                        "probability for it, and the most likely alternatives at that step. ␣ is a space, ⌫ the "
                        "tokenizer's delete marker.")
            probs_button = gr.Button("Generate and explain", variant="primary", elem_id="probs-run")
            probs_text = gr.Textbox(label="Continuation", lines=3, interactive=False, elem_id="probs-text")
            probs_table = gr.HTML(elem_id="probs-table")

        with gr.Tab("Temperature sweep", elem_id="tab-sweep"):
            temperatures = gr.Textbox("0.5, 1.0, 1.5", label=f"Temperatures (up to {SWEEP_SLOTS}, comma-separated; "
                                      "the temperature slider is not used here)", elem_id="temperatures")
            sweep_button = gr.Button("Sweep", variant="primary", elem_id="sweep-run")
            with gr.Row():
                sweep_outputs = [gr.Textbox(label=f"slot {i + 1}", lines=8, interactive=False, visible=False,
                                            elem_id=f"sweep-{i}", elem_classes=["sweep-output"])
                                 for i in range(SWEEP_SLOTS)]

        if len(labels) >= 2:
            with gr.Tab("Head to head", elem_id="tab-h2h"):
                with gr.Row():
                    model_a = gr.Dropdown(labels, value=labels[0], label="Model A", elem_id="model-a")
                    model_b = gr.Dropdown(labels, value=labels[1], label="Model B", elem_id="model-b")
                h2h_button = gr.Button("Compare", variant="primary", elem_id="h2h-run")
                with gr.Row():
                    output_a = gr.Textbox(label="Model A", lines=8, interactive=False, elem_id="h2h-a",
                                          elem_classes=["h2h-output"])
                    output_b = gr.Textbox(label="Model B", lines=8, interactive=False, elem_id="h2h-b",
                                          elem_classes=["h2h-output"])

        def generate(label, text, *values):
            loaded = models[label]
            yield from stream_text(loaded, text, check_request(loaded, text, *values))

        def explain(label, text, *values):
            loaded = models[label]
            continuation, rows = token_table(loaded, text, check_request(loaded, text, *values))
            return continuation, render_token_table(rows)

        def sweep(label, text, temperature_list, *values):
            loaded = models[label]
            chosen = parse_temperatures(temperature_list)
            settings_ = check_request(loaded, text, chosen[0], *values[1:])
            boxes = [gr.Textbox(value="", label=f"temperature {t:g}", visible=True) for t in chosen]
            boxes += [gr.Textbox(value="", visible=False)] * (SWEEP_SLOTS - len(chosen))
            for i, t in enumerate(chosen):
                settings_.temperature = t
                boxes[i] = gr.Textbox(value=sample_text(loaded, text, settings_), label=f"temperature {t:g}",
                                      visible=True)
                yield boxes

        def head_to_head(label_a, label_b, text, *values):
            first, second = models[label_a], models[label_b]
            settings_a, settings_b = check_request(first, text, *values), check_request(second, text, *values)
            a_text = ""
            for a_text in stream_text(first, text, settings_a):
                yield gr.Textbox(value=a_text, label=f"A: {label_a}"), gr.Textbox(value="", label=f"B: {label_b}")
            for b_text in stream_text(second, text, settings_b):
                yield gr.Textbox(value=a_text, label=f"A: {label_a}"), gr.Textbox(value=b_text, label=f"B: {label_b}")

        generate_button.click(generate, [model_choice, prompt, *settings], generated)
        prompt.submit(generate, [model_choice, prompt, *settings], generated)
        probs_button.click(explain, [model_choice, prompt, *settings], [probs_text, probs_table])
        sweep_button.click(sweep, [model_choice, prompt, temperatures, *settings], sweep_outputs)
        if len(labels) >= 2:
            h2h_button.click(head_to_head, [model_a, model_b, prompt, *settings], [output_a, output_b])
    return demo


if __name__ == "__main__":
    build_demo(load_models(CONFIG["models"]), CONFIG["title"]).launch(css=CSS)
