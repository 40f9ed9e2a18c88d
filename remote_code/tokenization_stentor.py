"""StentorTokenizer: the TokenMonster vocabulary of Stentor2 models as a transformers tokenizer.

Loaded with ``AutoTokenizer.from_pretrained(repo, trust_remote_code=True)``. Imports only the
standard library, transformers and the pure-Python engine beside it (``tokenmonster.py``); no
network, no subprocesses, no pickle files.

Ids (stable; the model's embedding matrix depends on them):

====================  ===========================================================
``0 .. V-1``          TokenMonster token ids, exactly as the reference (V = 8000)
``V``                 ``</s>``: end of sequence, also the padding token
``V + 1``             ``<s>``: beginning of sequence
``V + 2 ..``          ``<|reserved_0|>``, ``<|reserved_1|>``, ... up to the next multiple
                      of 128 (``len(tokenizer) == 8064`` for the 8000 vocabulary)
====================  ===========================================================

``encode`` adds no BOS/EOS unless ``add_bos_token`` / ``add_eos_token`` are set.

Unusual characters, the same in ``encode``, ``tokenizer(text)`` and batches:

* C0 control characters other than tab, newline and carriage return (U+0000-U+0008, U+000B,
  U+000C, U+000E-U+001F) and DEL (U+007F) have no token: they are dropped from what the ids
  spell (``decode(encode("a\\x00b")) == "ab"``), though a token never spans one. C1 controls
  (U+0080-U+009F) and format characters such as U+200B are kept, encoded as their UTF-8 bytes.
* An unpaired surrogate (U+D800-U+DFFF in a ``str``: a JSON escape ``"\\ud800"``, a
  ``surrogateescape`` decode) is not text and cannot be UTF-8 encoded: it raises ``ValueError``
  naming its position, never a silent replacement. Fix the input, or pass ``bytes``-decoded text.
"""

from __future__ import annotations

import os
import re

from transformers import AddedToken, BatchEncoding, PreTrainedTokenizer

from .tokenmonster import Vocab

# transformers 4.x copies into its module cache only the files this module imports itself, so
# the Unicode 13 table that tokenmonster.py reads is imported here as well
from .unicode13 import UNICODE_VERSION as _UNICODE_VERSION  # noqa: F401

VOCAB_FILE_NAME = "tokenmonster.vocab"
EOS_TOKEN = "</s>"
BOS_TOKEN = "<s>"
RESERVED_TOKEN = "<|reserved_{}|>"
ID_ALIGNMENT = 128
_SURROGATE = re.compile("[\ud800-\udfff]")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _byte_to_char() -> list[str]:
    """GPT-2's printable rendering of bytes: token strings are readable and reversible."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


_BYTE_TO_CHAR = _byte_to_char()
_CHAR_TO_BYTE = {c: b for b, c in enumerate(_BYTE_TO_CHAR)}


_NO_OFFSETS = (
    "return_offsets_mapping is not supported by StentorTokenizer: TokenMonster tokenizes the NFD "
    "form of the text with inserted capcode markers, so token boundaries do not map onto the "
    "characters you passed. Call tokenizer(text) without return_offsets_mapping."
)
_PLAIN_BATCH_OPTIONS = {
    "add_special_tokens", "padding_strategy", "truncation_strategy", "max_length", "stride", "is_split_into_words",
    "pad_to_multiple_of", "padding_side", "return_tensors", "return_token_type_ids", "return_attention_mask",
    "return_overflowing_tokens", "return_special_tokens_mask", "return_offsets_mapping", "return_length",
    "verbose", "split_special_tokens",
}


class _TokenList(list):
    """Token strings that also carry their ids, so ``convert_tokens_to_ids`` need not look
    every string up again (the engine produced the ids in the first place)."""

    __slots__ = ("ids",)


class StentorTokenizer(PreTrainedTokenizer):
    """TokenMonster tokenizer for Stentor2 models (see the module docstring for the ids).

    Args:
        vocab_file: path of the TokenMonster ``.vocab`` file.
        add_bos_token / add_eos_token: add ``<s>`` / ``</s>`` around encoded sequences
            (both off by default, as the models were trained).
    """

    vocab_files_names = {"vocab_file": VOCAB_FILE_NAME}
    model_input_names = ["input_ids", "attention_mask"]
    _auto_class = "AutoTokenizer"  # save_pretrained copies this file and writes auto_map

    def __init__(
        self,
        vocab_file: str,
        bos_token: str = BOS_TOKEN,
        eos_token: str = EOS_TOKEN,
        pad_token: str = EOS_TOKEN,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        clean_up_tokenization_spaces: bool = False,
        **kwargs,
    ):
        self.vocab_file = vocab_file
        self._vocab = Vocab.load(vocab_file)
        base = self._vocab.n_ids
        self._base_size = base
        self._id_to_token = [
            "".join([_BYTE_TO_CHAR[b] for b in self._vocab.id_to_token(i)]) for i in range(base)
        ]
        self._token_to_id = {t: i for i, t in enumerate(self._id_to_token)}
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token

        specials = {
            base: AddedToken(EOS_TOKEN, special=True, normalized=False),
            base + 1: AddedToken(BOS_TOKEN, special=True, normalized=False),
        }
        padded = -(-(base + 2) // ID_ALIGNMENT) * ID_ALIGNMENT
        for n, token_id in enumerate(range(base + 2, padded)):
            specials[token_id] = AddedToken(RESERVED_TOKEN.format(n), special=True, normalized=False)
        for token_id, token in (kwargs.pop("added_tokens_decoder", None) or {}).items():
            specials[int(token_id)] = token if isinstance(token, AddedToken) else AddedToken(str(token), special=True)
        self._added_tokens_decoder = specials
        self._specials_by_first = {}
        self._specials_key = None

        kwargs.setdefault("chat_template", CHAT_TEMPLATE)
        kwargs.setdefault("spaces_between_special_tokens", False)
        super().__init__(
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )

    # -- vocabulary ---------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of TokenMonster ids (without the special and reserved ids)."""
        return self._base_size

    def get_vocab(self) -> dict[str, int]:
        vocab = dict(self._token_to_id)
        vocab.update(self._added_tokens_encoder)
        return vocab

    def _convert_token_to_id(self, token: str) -> int:
        try:
            return self._token_to_id[token]
        except KeyError:
            raise ValueError(f"{token!r} is not a token of this vocabulary") from None

    def _convert_id_to_token(self, index: int) -> str:
        if 0 <= index < self._base_size:
            return self._id_to_token[index]
        raise ValueError(f"token id {index} is outside this tokenizer's ids 0..{len(self) - 1}")

    # -- encoding -----------------------------------------------------------------------

    def _special_strings(self, split_special_tokens=None) -> dict[str, tuple[str, ...]]:
        """The added tokens' strings by first character (rebuilt when tokens are added), or {}
        when special-token strings are to be split like text (``None``: the tokenizer's
        setting). Tuples for str.startswith, not a regex: compiling an alternation of every
        reserved token took longer than encoding a thousand lines."""
        if split_special_tokens is None:
            split_special_tokens = self.split_special_tokens
        if split_special_tokens:
            return {}
        encoder = self._added_tokens_encoder
        if self._specials_key != (id(encoder), len(encoder)):
            by_first: dict[str, list[str]] = {}
            for token in encoder:
                if token:
                    by_first.setdefault(token[0], []).append(token)
            self._specials_by_first = {first: tuple(tokens) for first, tokens in by_first.items()}
            self._specials_key = (id(encoder), len(encoder))
        return self._specials_by_first

    @staticmethod
    def _holds_special(text: str, specials: dict[str, tuple[str, ...]]) -> bool:
        """Whether ``text`` contains one of ``specials`` (see _special_strings)."""
        for first, tokens in specials.items():
            at = text.find(first)
            while at >= 0:
                if text.startswith(tokens, at):
                    return True
                at = text.find(first, at + 1)
        return False

    def _encode_text(self, text: str) -> list[int]:
        """TokenMonster ids of ``text``; an unpaired surrogate is a ValueError naming its position."""
        try:
            return self._vocab.encode(text)
        except UnicodeEncodeError:
            where = _SURROGATE.search(text)
            if where is None:
                raise
            raise ValueError(
                f"text holds the surrogate code point U+{ord(where.group()):04X} at character {where.start()} "
                "(U+D800-U+DFFF: not valid Unicode text, e.g. from an unpaired JSON escape); fix the input"
            ) from None

    def tokenize(self, text: str, **kwargs) -> list[str]:
        """Token strings of ``text``. Special-token strings written in the text (``</s>``,
        ``<s>``, reserved and added tokens) become those tokens unless
        ``split_special_tokens=True``."""
        specials = self._special_strings(kwargs.pop("split_special_tokens", None))
        text, kwargs = self.prepare_for_tokenization(text, **kwargs)
        if specials and self._holds_special(text, specials):
            # rare: let transformers split on added tokens (it honours lstrip/rstrip/single_word)
            return super().tokenize(text, split_special_tokens=False, **kwargs)
        ids = self._encode_text(text)
        tokens = _TokenList(map(self._id_to_token.__getitem__, ids))
        tokens.ids = ids
        return tokens

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [self._id_to_token[i] for i in self._encode_text(text)]

    def convert_tokens_to_ids(self, tokens):
        if type(tokens) is _TokenList:
            return list(tokens.ids)
        return super().convert_tokens_to_ids(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        ids = bos + list(token_ids_0) + eos
        if token_ids_1 is not None:
            ids += bos + list(token_ids_1) + eos
        return ids

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [1 if t in special else 0 for t in token_ids_0 + (token_ids_1 or [])]
        bos = [1] if self.add_bos_token else []
        eos = [1] if self.add_eos_token else []
        mask = bos + [0] * len(token_ids_0) + eos
        if token_ids_1 is not None:
            mask += bos + [0] * len(token_ids_1) + eos
        return mask

    def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None):
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def prepare_for_model(
        self,
        ids,
        pair_ids=None,
        add_special_tokens: bool = True,
        padding=False,
        truncation=None,
        max_length=None,
        return_tensors=None,
        return_token_type_ids=None,
        return_attention_mask=None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        **kwargs,
    ):
        """transformers calls this once per sequence of a batch. The common case (one sequence,
        no padding, no truncation, no tensors, no extra outputs) is built directly: the same
        dict transformers would build, at a fraction of the cost; everything else goes to
        transformers."""
        simple = (
            pair_ids is None
            and padding in (False, None, "do_not_pad")
            and truncation in (False, None, "do_not_truncate")
            and return_tensors is None
            and not return_token_type_ids
            and not return_overflowing_tokens
            and not return_special_tokens_mask
            and set(kwargs) <= {"stride", "pad_to_multiple_of", "padding_side", "prepend_batch_axis", "split_special_tokens"}
            and not kwargs.get("stride")
        )
        if not simple:
            return super().prepare_for_model(
                ids, pair_ids=pair_ids, add_special_tokens=add_special_tokens, padding=padding,
                truncation=truncation, max_length=max_length, return_tensors=return_tensors,
                return_token_type_ids=return_token_type_ids, return_attention_mask=return_attention_mask,
                return_overflowing_tokens=return_overflowing_tokens,
                return_special_tokens_mask=return_special_tokens_mask, return_length=return_length,
                verbose=verbose, **kwargs,
            )
        sequence = self.build_inputs_with_special_tokens(ids) if add_special_tokens else list(ids)
        encoded = {"input_ids": sequence}
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if return_attention_mask:
            encoded["attention_mask"] = [1] * len(sequence)
        self._eventual_warn_about_too_long_sequence(sequence, max_length, verbose)
        if return_length:
            encoded["length"] = len(sequence)
        return BatchEncoding(encoded)

    def _encode_plus(self, text=None, text_pair=None, **kwargs):
        """transformers 5.x entry point for one text or a batch."""
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError(_NO_OFFSETS)
        padding = getattr(kwargs.get("padding_strategy"), "value", kwargs.get("padding_strategy"))
        if (text_pair is None and isinstance(text, str) and padding in (None, False, "do_not_pad")
                and not kwargs.get("return_length") and self._is_plain_batch([text], kwargs)):
            # one text, unpadded: a plain batch of one, without the token strings transformers'
            # path builds (a tenth of data preparation's time went on them in tokenizer.encode)
            batch = self._encode_plain_batch([text], **kwargs)
            if kwargs.get("return_tensors") is None:
                return BatchEncoding({key: value[0] for key, value in batch.items()})
            return batch  # with tensors transformers gives one text a batch axis too
        if text_pair is None and self._is_plain_batch(text, kwargs):
            return self._encode_plain_batch(text, **kwargs)
        return super()._encode_plus(text=text, text_pair=text_pair, **kwargs)

    def _batch_encode_plus(self, batch_text_or_text_pairs, **kwargs):
        """transformers 4.x entry point for batches."""
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError(_NO_OFFSETS)
        if self._is_plain_batch(batch_text_or_text_pairs, kwargs):
            return self._encode_plain_batch(batch_text_or_text_pairs, **kwargs)
        return super()._batch_encode_plus(batch_text_or_text_pairs, **kwargs)

    @staticmethod
    def _is_plain_batch(texts, options: dict) -> bool:
        """A list of strings with options that need no per-sequence work from transformers:
        no truncation, pairs, word splits, overflow, token types or special-token masks."""
        truncation = options.get("truncation_strategy", "do_not_truncate")
        return (
            isinstance(texts, (list, tuple))
            and all(isinstance(t, str) for t in texts)
            and truncation == "do_not_truncate"
            and not options.get("is_split_into_words")
            and not options.get("stride")
            and not options.get("return_token_type_ids")
            and not options.get("return_overflowing_tokens")
            and not options.get("return_special_tokens_mask")
            and set(options) <= _PLAIN_BATCH_OPTIONS
        )

    def _encode_plain_batch(
        self,
        texts,
        add_special_tokens: bool = True,
        padding_strategy="do_not_pad",
        max_length=None,
        pad_to_multiple_of=None,
        padding_side=None,
        return_tensors=None,
        return_attention_mask=None,
        return_length: bool = False,
        verbose: bool = True,
        split_special_tokens=None,
        **unused,
    ) -> BatchEncoding:
        """What transformers' batch path returns for a plain batch (see _is_plain_batch),
        without its per-sequence overhead: encode each text, pad once, convert once."""
        specials = self._special_strings(split_special_tokens)
        encode = self._vocab.encode
        # build_inputs_with_special_tokens, with the special ids looked up once per batch and
        # put into the fresh list in place (copying every list was a tenth of the encoding time)
        bos = self.bos_token_id if add_special_tokens and self.add_bos_token else None
        eos = self.eos_token_id if add_special_tokens and self.add_eos_token else None
        input_ids = []
        text = None
        try:
            for text in texts:
                if specials and self._holds_special(text, specials):
                    ids = self.convert_tokens_to_ids(self.tokenize(text, split_special_tokens=False))
                else:
                    ids = encode(text)  # what tokenize + convert_tokens_to_ids give, without the strings
                if bos is not None:
                    ids.insert(0, bos)
                if eos is not None:
                    ids.append(eos)
                input_ids.append(ids)
        except UnicodeEncodeError:
            self._encode_text(text)  # raises the error that names the surrogate's place
            raise
        if input_ids:  # it warns once, if any sequence is too long: the longest tells
            self._eventual_warn_about_too_long_sequence(max(input_ids, key=len), max_length, verbose)
        batch = {"input_ids": input_ids}
        if return_length:
            batch["length"] = [len(ids) for ids in input_ids]
        padding = getattr(padding_strategy, "value", padding_strategy)
        if padding in (False, None, "do_not_pad"):
            if return_attention_mask is None:
                return_attention_mask = "attention_mask" in self.model_input_names
            if return_attention_mask:
                batch["attention_mask"] = [[1] * len(ids) for ids in input_ids]
        else:
            batch = self.pad(
                batch,
                padding=padding,
                max_length=max_length,
                pad_to_multiple_of=pad_to_multiple_of,
                padding_side=padding_side,
                return_attention_mask=return_attention_mask,
            )
        return BatchEncoding(batch, tensor_type=return_tensors)

    # -- decoding -----------------------------------------------------------------------

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs) -> str:
        """Text of ``token_ids``.

        The text comes back as the tokens spell it, which is Unicode NFD: TokenMonster works
        on the NFD form of the input (plus a U+034F COMBINING GRAPHEME JOINER after every 30
        consecutive combining marks), so ``decode(encode(s)) == unicodedata.normalize("NFD", s)``
        (by Unicode 13's tables, the reference's: a code point assigned later is a starter
        without decomposition there, whatever this Python's ``unicodedata`` says) whenever every byte of ``s`` has a token and ``s`` has no DEL (U+007F) and no run of
        more than 30 combining marks. Call ``unicodedata.normalize("NFC", text)`` on the result
        for composed text.

        Why not NFC: decoding must be prefix-stable for streaming. transformers' streamers
        decode a growing list of ids and print only what is new; composing ``U`` with a
        U+0308 that arrives in the next token would rewrite text already printed (``Ü``),
        and the streamer would skip a character. Without recomposition the decode of a
        prefix of the ids is a prefix of the decode of the whole.

        Bytes that are not valid UTF-8 (an unfinished character at the end, or lone byte
        tokens) become U+FFFD, one per maximal invalid sequence, as
        ``bytes.decode("utf-8", "replace")`` does. Special tokens appear as their strings
        unless ``skip_special_tokens``; the text between them is decoded piece by piece.

        Unfinished text: when the ids end with a delete marker that has nothing left to act
        on yet (it glues the next word to what came before), the text ends with U+FFFD, as it
        does when the ids end inside a UTF-8 character; the next token replaces it. Streamers
        and incremental detokenizers (vLLM's) hold back a trailing U+FFFD, and a text cut there
        does not end in a newline, so streamers that restart after every newline (transformers
        4.x to 5.23 clear their cache there) never restart while the marker is pending. A
        tokenized text never ends this way.
        """
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        base = self._base_size
        decode = self._vocab.decode
        pieces = []
        run = []
        special_ids = set(self.all_special_ids) if skip_special_tokens else ()
        for token_id in token_ids:
            token_id = int(token_id)
            if 0 <= token_id < base:
                run.append(token_id)
                continue
            token = self._added_tokens_decoder.get(token_id)
            if token is None:
                raise ValueError(f"token id {token_id} is outside this tokenizer's ids 0..{len(self) - 1}")
            if skip_special_tokens and (token.special or token_id in special_ids):
                continue
            if run:
                pieces.append(decode(run))
                run = []
            pieces.append(token.content.encode("utf-8"))
        if run:
            pieces.append(decode(run))
            if self._ends_with_pending_delete(run):
                pieces.append(b"\xff")  # an unfinished sequence, like a cut UTF-8 character
        return b"".join(pieces).decode("utf-8", "replace")

    def _ends_with_pending_delete(self, ids) -> bool:
        """Whether the bytes of ``ids`` end with an odd run of 0x7F (capcode delete markers):
        then the last marker deletes nothing yet and waits for the next token."""
        if self._vocab.capcode != 1:
            return False
        trailing = 0
        for token_id in reversed(ids):
            raw = self._vocab.id_to_token(token_id)
            stripped = raw.rstrip(b"\x7f")
            trailing += len(raw) - len(stripped)
            if stripped:
                break
        return trailing % 2 == 1

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self._decode([self.convert_tokens_to_ids(t) for t in tokens])

    # -- saving -------------------------------------------------------------------------

    def save_chat_templates(self, save_directory, tokenizer_config: dict, filename_prefix, save_jinja_files: bool):
        """Writes ``chat_template.jinja`` as transformers does, and the template into
        ``tokenizer_config.json`` as well: serving engines such as TGI read it only there."""
        tokenizer_config, saved = super().save_chat_templates(save_directory, tokenizer_config, filename_prefix, save_jinja_files)
        if isinstance(self.chat_template, str):
            tokenizer_config["chat_template"] = self.chat_template
        return tokenizer_config, saved

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        if not os.path.isdir(save_directory):
            raise ValueError(f"save_vocabulary needs an existing directory, got {save_directory}")
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILE_NAME
        target = os.path.join(save_directory, name)
        # the bytes in memory, not a copy of vocab_file (it may have moved since loading)
        partial = target + ".partial"
        with open(partial, "wb") as f:
            f.write(self._vocab._raw)
        os.replace(partial, target)
        return (target,)
