"""The model card's sections from facts, the author's sections, head-to-head comparisons, and the
check that runs every python block of a staged card."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from stentor_hub._resources import resource_dir
from stentor_hub.card import (ModelCardFacts, heading_anchor, indefinite_article, python_blocks, render_card,
                              split_sections, write_card)
from stentor_hub.cli import main
from stentor_hub.errors import CardError
from stentor_hub.publish import PublishError, check_card_code, check_staged, stage_repository

sys.path.insert(0, str(Path(__file__).parent))
from test_publish import make_run_dir  # noqa: E402

EXAMPLE_CONFIG = resource_dir("cards") / "examples" / "stentor2-30m.md"
# the sections every card of a run has, in order (BLiMP, comparison, notices, samples and speculative
# decoding only when their facts exist)
ALWAYS = ["Contents", "Quick start", "Inference guide", "Quantization", "Format conversion", "Architecture",
          "Tokenizer", "Training", "Compute", "Environmental impact", "Citation"]


def headings(card: str) -> list[str]:
    return [title for title, _ in split_sections(card.split("\n---\n", 1)[1])[1]]


def edit_manifest(run: Path, **sections) -> None:
    manifest = json.loads((run / "run_manifest.json").read_text())
    for name, values in sections.items():
        manifest[name] = {**manifest[name], **values}
    (run / "run_manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tokenizer_dir) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("card_run") / "run", tokenizer_dir)


@pytest.fixture(scope="module")
def blimp_74(tmp_path_factory, shared) -> Path:
    """BLiMP results over the real task names: one task at 100%, overall 74.17%."""
    tasks = {}
    for i, path in enumerate(sorted((shared / "blimp").glob("*.jsonl"))):
        first = json.loads(path.open().readline())
        correct = 1000 if i == 0 else 500 + (i * 53) % 480
        tasks[first["UID"]] = {"correct": correct, "total": 1000, "accuracy": correct / 10,
                               "field": first["field"], "linguistics_term": first["linguistics_term"]}
    out = tmp_path_factory.mktemp("blimp74") / "blimp_results.json"
    out.write_text(json.dumps({"overall": 74.1666, "tasks": tasks, "model": "x", "scoring": "sum log-prob"}))
    return out


# --- sections from facts -------------------------------------------------------------------------


def test_a_run_card_has_every_generated_section_with_computed_figures(run, blimp_74):
    text = render_card(ModelCardFacts.from_run(run, blimp=blimp_74, repo_id="stentor/tiny"))
    titles = headings(text)
    assert [t for t in titles if t in ALWAYS] == ALWAYS
    assert "Evaluation: BLiMP" in titles and "Consistency notices" not in titles  # the fake run is consistent
    # contents: every other ## heading, linked by its anchor
    for title in titles[1:]:
        assert f"- [{title}](#{heading_anchor(title)})" in text
    assert heading_anchor("Bias, risks and limitations") == "bias-risks-and-limitations"
    # badges: shields.io, each figure from the run
    for badge in ("license-apache--2.0-blue", "parameters-598.3K-", "training-2.00%20h-", "hardware-1%20%C3%97%20CPU-",
                  "context-128%20tokens-", "vocabulary-8%2C064-", "BLiMP-74.17%25-"):
        assert f"https://img.shields.io/badge/{badge}" in text
    assert "A 598,336-parameter `LlamaForCausalLM` language model with\nan 8,064-id TokenMonster tokenizer" in text
    assert "github.com" not in text.split("## Evaluation: BLiMP")[0]  # no invented project link
    # one way for numbers: counts with separators (ids are names, not counts), shares with two decimals
    assert "| `vocab_size` | 8,064 |" in text and "| `bos_token_id` | 8001 |" in text
    assert "| embedding (tied with the output layer) | 516,096 | 86.26% |" in text
    # vocabulary efficiency: 8,064 x 64, its share, the rest
    assert "8,064 × 64 =\n**516,096** parameters" in text and "86.26% of the total" in text and "**82,240**" in text
    # BLiMP with two decimals, as the published card prints them
    assert "**Overall accuracy: 74.17%**" in text and "(100.00%)" in text
    # training dynamics: per epoch, from the curves; why it stopped
    assert "| 1 | 1–50 (50) | ≈ 60.0 min | 8.1000 | 7.1000 | 1211.97 |" in text  # no steps_per_epoch: not partial
    assert "| 2 | 51–100 (50) | ≈ 60.0 min | 6.1000 | 4.1000 | 60.34 |" in text
    assert "stopped\nbecause it completed the configured 2 epochs (100 steps)" in text
    assert "normal(0, 0.02)" in text and "NFKC" in text and "Seed 1." in text
    # recommended settings from the card config (defaults), used by the generate() helper
    assert "settings = dict(do_sample=True, temperature=1.0, top_p=0.8, repetition_penalty=1.1, max_new_tokens=40)" in text
    assert "torch.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)" in text
    assert "stentor-hub export onnx stentor/tiny --out tiny-onnx" in text and "no TokenMonster vocabulary type" in text
    # citation generated from the metadata
    assert "@misc{tiny2026,\n  title = {tiny: a 598.3K-parameter language model},\n  author = {stentor}," in text
    assert "howpublished = {\\url{https://huggingface.co/stentor/tiny}}" in text


def test_the_data_pipeline_says_what_each_source_gave(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    data = json.loads((copy / "run_manifest.json").read_text())["data"]
    assert "source_tokens_by_source" not in data  # an older run: the total only
    assert "| Tokens taken from the sources | 20,000 (all sources together) |" in render_card(ModelCardFacts.from_run(copy))
    edit_manifest(copy, data={"source_tokens_by_source": [15000, 5000]})
    assert "| Tokens taken from the sources | 20,000: sample.txt 15,000 (75.0%); epfml/FineWeb-HQ 5,000 (25.0%) |" in render_card(ModelCardFacts.from_run(copy))
    edit_manifest(copy, data={"source_tokens_by_source": [15000, -5]})
    with pytest.raises(CardError, match="source_tokens_by_source must be counts of tokens"):
        render_card(ModelCardFacts.from_run(copy))


def test_numbers_read_with_the_right_article():
    assert [indefinite_article(n) for n in (8064, 8, 11, 18, 80, 800, 18_000, 11_500)] == ["an"] * 8
    assert [indefinite_article(n) for n in (598_336, 1, 64, 180, 1_100, 30_353_920, 110)] == ["a"] * 7


def test_consistency_notices_and_environment_from_the_facts(run, tmp_path):
    """The Stentor2-30M contradiction (8,192 tokens x 30,300 steps is not 800M) is said in the card;
    energy and CO2 come from a known device's power and the card config's grid intensity."""
    broken = tmp_path / "run"
    shutil.copytree(run, broken)
    manifest = json.loads((broken / "run_manifest.json").read_text())
    manifest["recipe"]["training"].update(token_budget=800_000_000, max_steps=30_300)
    (broken / "run_manifest.json").write_text(json.dumps(manifest))
    edit_manifest(broken, training={"tokens_per_step": 8192, "steps_per_epoch": 15_150},
                  hardware={"device": "cuda", "device_name": "Tesla T4", "num_processes": 2})
    config = tmp_path / "card.yaml"
    config.write_text(yaml.safe_dump({"grid_intensity": 0.5, "geographical_location": "Belgium",
                                      "datasets": ["epfml/FineWeb-HQ", "someone/else"]}))
    text = render_card(ModelCardFacts.from_run(broken, card_config=config))
    notices = text.split("## Consistency notices")[1].split("\n## ")[0]
    assert ("token budget of 800,000,000 tokens, but 8,192 tokens per step × 30,300 steps at most is "
            "248,217,600: the budget cannot be reached") in notices
    assert "lists datasets (someone/else) that are not among the run's Hub training sources (epfml/FineWeb-HQ)" in notices
    # 2 x 70 W x 2 h = 0.28 kWh; x 0.5 kg/kWh = 0.14 kg
    assert "| Power | 70 W per device, from the board power of the Tesla T4 |" in text
    assert "| Energy | 0.280 kWh" in text and "| Emissions | 0.140 kg CO₂eq" in text
    co2 = ModelCard(text, ignore_metadata_errors=False).data.to_dict()["co2_eq_emissions"]
    assert co2 == {"emissions": 140.0, "source": "stentor-hub estimate: device power x training hours x grid intensity",
                   "training_type": "pre-training", "geographical_location": "Belgium", "hardware_used": "2 × Tesla T4"}
    # without a grid intensity there is no figure to claim: no metadata
    assert "co2_eq_emissions" not in render_card(ModelCardFacts.from_run(broken)).split("\n---\n")[0]


def test_co2_metadata_in_the_wrong_shape_stops_the_checks(tmp_path, run):
    folder = tmp_path / "repo"
    folder.mkdir()
    shutil.copy(run / "best" / "model.safetensors", folder)
    card = render_card(ModelCardFacts.from_run(run))
    (folder / "README.md").write_text(card.replace("---\n", "---\nco2_eq_emissions:\n  emissions: lots\n  grams: 3\n", 1))
    with pytest.raises(PublishError, match=r"co2_eq_emissions is not in the Hub's format: unknown key 'grams'; "
                                           r"'emissions' must be a number, got 'lots'"):
        check_staged(folder)


# --- earlier models --------------------------------------------------------------------------------


def test_compare_with_an_earlier_run_and_a_card_facts_file(run, tmp_path, tokenizer_dir, capsys):
    earlier = make_run_dir(tmp_path / "earlier", tokenizer_dir, seed=1)
    edit_manifest(earlier, best={"eval_ppl": 200.0}, hardware={"mixed_precision": "fp16"})
    facts_file = tmp_path / "v1.yaml"
    facts_file.write_text(yaml.safe_dump({"name": "Stentor-v1", "vocab_size": 32000, "hidden_size": 64,
                                          "parameters": 2_200_000, "embedding_parameters": 2_048_000,
                                          "best_perplexity": 328.04, "tokenizer": "Llama SentencePiece"}))
    out = tmp_path / "README.md"
    assert main(["card", str(run), "--out", str(out), "--compare", str(earlier), str(facts_file)]) == 0
    text = out.read_text()
    table = text.split("## Comparison with earlier models")[1].split("\n## ")[0]
    assert "| | run | earlier | Stentor-v1 |" in table
    assert "| Vocabulary | 8,064 | 8,064 | 32,000 |" in table
    assert "| Intermediate size | 128 | 128 | — |" in table  # not in the facts file
    assert "| Embedding share | 86.26% | 86.26% | 93.09% |" in table
    assert "| Non-embedding parameters | 82,240 | 82,240 | 152,000 |" in table
    # 164.02 against 200.00 and 328.04
    assert "| Best perplexity | 164.02 | 200.00 | 328.04 |" in table
    assert "| Best perplexity, this model vs. it | — | -17.99% | -50.00% |" in table
    assert "| Precision | no | fp16 | — |" in table and "| Tokenizer | TokenMonster english-8000" in table
    # vocabulary efficiency side by side
    assert "| Stentor-v1 | 32,000 | 2,048,000 | 93.09% | 152,000 |" in text
    facts_file.write_text("name: x\nvocab: 3\n")
    assert main(["card", str(run), "--out", str(out), "--compare", str(facts_file)]) == 2
    assert "unknown keys ['vocab']" in capsys.readouterr().err


# --- the author's sections -------------------------------------------------------------------------


def test_author_sections_in_the_order_written_where_the_author_puts_them(run, tmp_path, capsys):
    config = tmp_path / "card.md"
    config.write_text("---\nlicense: mit\nproject_url: https://example.org/stentor\n---\n"
                      "## Out-of-scope use\n\nNo medical advice.\n\n"
                      "## Our own notes\n<!-- after: Quick start -->\n\nRead this first.\n\n"
                      "## Uses\n\nResearch.\n\n"
                      "## Model card contact\n\nThe authors.\n\n"
                      "## Benchmarks elsewhere\n\n```python\n## not a heading\n```\n\n"
                      "## Tokenizer\n\nThe author's extra words on the tokenizer.\n")
    text = render_card(ModelCardFacts.from_run(run, card_config=config))
    titles = headings(text)
    assert titles.index("Our own notes") == titles.index("Quick start") + 1
    # known kinds where the HF template puts them, in the order written: uses before the technical part
    assert titles.index("Out-of-scope use") < titles.index("Uses") < titles.index("Architecture")
    assert titles.index("Benchmarks elsewhere") == titles.index("Citation") - 1
    assert titles[-1] == "Model card contact" and titles.count("Tokenizer") == 1
    assert "The author's extra words on the tokenizer." in text.split("## Tokenizer")[1].split("\n## ")[0]
    assert "```python\n## not a heading\n```" in text and "[stentor-hub](https://example.org/stentor)" in text
    assert "- [Our own notes](#our-own-notes)" in text

    yaml_config = tmp_path / "card.yaml"
    yaml_config.write_text(yaml.safe_dump({"sections": [{"title": "Glossary", "text": "Words.", "before": "Tokenizer"}]}))
    titles = headings(render_card(ModelCardFacts.from_run(run, card_config=yaml_config)))
    assert titles.index("Glossary") == titles.index("Tokenizer") - 1

    config.write_text("## Notes\n<!-- before: No such section -->\n\nx\n")
    with pytest.raises(ValueError, match=r"section 'Notes' is placed before 'No such section', which this card does "
                                         r"not have; the card's sections are \['Contents', 'Quick start'"):
        render_card(ModelCardFacts.from_run(run, card_config=config))
    config.write_text("---\ngeneration: {temperature: hot}\n---\n")
    with pytest.raises(ValueError, match="'generation.temperature' must be a non-negative number, got 'hot'"):
        ModelCardFacts.from_run(run, card_config=config)


def test_the_example_card_config_has_every_kind_of_section(run, blimp_74, tmp_path):
    out = write_card(run, tmp_path / "README.md", blimp=blimp_74, card_config=EXAMPLE_CONFIG,
                     repo_id="StentorLabs/Stentor2-30M", compare=[run])
    text = out.read_text()
    assert headings(text) == [
        "Contents", "Consistency notices", "Quick start", "Inference guide", "Quantization", "Format conversion",
        "Speculative decoding", "Sample outputs", "Intended uses", "Out-of-scope use", "Limitations",
        "Bias, risks and limitations", "Recommendations", "Notices", "Architecture", "Comparison with earlier models",
        "Tokenizer", "Training", "Training notes", "Evaluation: BLiMP", "Compute", "Environmental impact",
        "Related work", "Citation", "Model card contact"]
    assert "target_repo = \"StentorLabs/Stentor2-30M\", \"HuggingFaceTB/SmolLM2-360M\"" in text
    assert "assistant_model=draft, tokenizer=target_tok, assistant_tokenizer=draft_tok" in text
    assert "@misc{stentor2_30m," in text and "author = {StentorLabs}" in text
    assert ModelCard(text, ignore_metadata_errors=False).data.license == "apache-2.0"


# --- sample outputs ----------------------------------------------------------------------------------


def test_sample_outputs_are_generated_with_the_recorded_settings_and_seed(run, tmp_path):
    config = tmp_path / "card.yaml"
    config.write_text(yaml.safe_dump({"sample_prompts": ["Once upon a time", "The river"], "sample_seed": 7,
                                      "generation": {"max_new_tokens": 8}}))
    first = write_card(run, tmp_path / "a.md", card_config=config).read_text()
    second = write_card(run, tmp_path / "b.md", card_config=config).read_text()
    assert first == second  # fixed seed: byte-identical
    samples = first.split("## Sample outputs")[1].split("\n## ")[0]
    assert "`torch.manual_seed(7)`" in samples and "`max_new_tokens=8`" in samples and "**Unfiltered:**" in samples
    assert "**Prompt:** Once upon a time\n\n> Once upon a time" in samples and "**Prompt:** The river" in samples
    config.write_text(yaml.safe_dump({"sample_prompts": ["Once upon a time", "The river"], "sample_seed": 8,
                                      "generation": {"max_new_tokens": 8}}))
    other = write_card(run, tmp_path / "c.md", card_config=config).read_text()
    assert other.split("## Sample outputs")[1] != samples  # the seed decides the text


# --- the card's code runs before publishing -----------------------------------------------------------


def make_target_model(out: Path, text_file: Path) -> Path:
    """A tiny Llama with a byte-level BPE tokenizer of its own: another tokenizer than the draft's."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(text_file.read_text()[:100_000].splitlines(),
                            trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", unk_token="<unk>",
                                        pad_token="<|endoftext|>")
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
                     ).save_pretrained(out)
    return out


def test_every_python_block_of_a_staged_card_runs(run, tmp_path, shared, capsys):
    """Quick start, the generate() helper, fp16 + INT8 and speculative decoding with a draft of
    another tokenizer: each in a fresh offline process against the staged folder."""
    target = make_target_model(tmp_path / "target", shared / "corpora" / "gutenberg_val.txt")
    config = tmp_path / "card.yaml"
    config.write_text(yaml.safe_dump({"speculative_target": str(target), "generation": {"max_new_tokens": 8}}))
    staged = stage_repository(run, tmp_path / "staged", repo_id="stentor/checked", card_config=config)
    blocks = check_card_code(staged)
    assert [b.ran for b in blocks] == [True] * 4, blocks
    assert [b.line for b in blocks] == [b.line for b in python_blocks((staged / "README.md").read_text())]
    assert blocks[3].first_line == "from transformers import AutoModelForCausalLM, AutoTokenizer"
    assert "assistant_tokenizer=draft_tok" in (staged / "README.md").read_text()


def test_a_failing_block_stops_the_publish_and_markers_are_reported(run, tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "README.md").write_text(
        '---\nlicense: mit\n---\n# x\n\n<!-- check: skip needs a TPU -->\n```python\nimport tpu\n```\n\n'
        '<!-- check: needs-model nobody/not-cached-anywhere -->\n```python\nraise SystemExit(3)\n```\n\n'
        '```python\nrepo = "OWNER/x"\nimport os\nassert os.path.isdir(repo), repo\nassert not os.environ.get("HF_TOKEN")\n'
        'print(1 / 0)\n```\n')
    with pytest.raises(PublishError) as failed:
        check_card_code(folder)
    message = str(failed.value)
    assert "README.md, the python block at line 16 fails (exit 1)" in message
    assert 'repo = "OWNER/x"' in message and "ZeroDivisionError: division by zero" in message  # the folder passed
    text = (folder / "README.md").read_text().replace("print(1 / 0)", "print('fine')")
    (folder / "README.md").write_text(text)
    skipped, missing, ran = check_card_code(folder)
    assert (skipped.ran, skipped.reason) == (False, "needs a TPU")
    assert not missing.ran and "needs the model nobody/not-cached-anywhere, which is neither a local folder" in missing.reason
    assert ran.ran and ran.first_line == 'repo = "OWNER/x"'
