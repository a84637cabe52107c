"""An offline WordPiece tokenizer for text encoders built from a config (random weights).

A randomly initialised BERT has no tokenizer of its own, and mmfuse never downloads one. This
module builds a BERT-style tokenizer in memory with the ``tokenizers`` library: BERT's
normaliser (lower-casing, accent stripping) and pre-tokeniser, a WordPiece model with
``##`` continuations, and the ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` templates. It is
wrapped as a ``transformers.PreTrainedTokenizerFast``, so it pads, truncates, returns
``token_type_ids`` and saves with ``save_pretrained`` like any HF tokenizer.

The vocabulary is deterministic — the same words always give the same ids:

1. the special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0–4);
2. single characters (letters, digits, ASCII punctuation), then their ``##`` continuations,
   so that *every* ASCII word can be spelled and nothing common maps to ``[UNK]``;
3. whole words: :data:`DEFAULT_WORDS` (common English words, the colours, shapes and
   sentiment words of the synthetic data set, MSED's emotion and desire words), followed by
   the caller's ``words`` in their order (duplicates are skipped).

Appending words never changes the id of an existing token.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = SPECIAL_TOKENS
CONTINUATION_PREFIX = "##"

#: characters that get a token of their own (and, for letters and digits, a ``##`` continuation)
CHARACTERS: str = string.ascii_lowercase + string.digits + string.punctuation
CONTINUED_CHARACTERS: str = string.ascii_lowercase + string.digits

_COMMON = """
the of and to a in is it you that he was for on are with as i his they be at one have this from
or had by not word but what some we can out other were all there when up use your how said an
each she which do their time if will way about many then them write would like so these her long
make thing see him two has look more day could go come did number sound no most people my over
know water than call first who may down side been now find any new work part take get place made
live where after back little only round man year came show every good me give our under name very
through just form sentence great think say help low line differ turn cause much mean before move
right boy old too same tell does set three want air well also play small end put home read hand
port large spell add even land here must big high such follow act why ask men change went light
kind off need house picture try us again animal point mother world near build self earth father
head stand own page should country found answer school grow study still learn plant cover food sun
four between state keep eye never last let thought city tree cross farm hard start might story saw
far sea draw left late run don while press close night real life few north open seem together next
white children begin got walk example ease paper group always music those both mark often letter
until mile river car feet care second book carry took science eat room friend began idea fish
mountain stop once base hear horse cut sure watch colour color face wood main enough plain girl
usual young ready above ever red list though feel talk bird soon body dog family direct pose leave
song measure door product black short numeral class wind question happen complete ship area half
rock order fire south problem piece told knew pass since top whole king space heard best hour
better true during hundred five remember step early hold west ground interest reach fast verb sing
listen six table travel less morning ten simple several vowel toward war lay against pattern slow
center love person money serve appear road map rain rule govern pull cold notice voice unit power
town fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest
correct able pound done beauty drive stood contain front teach week final gave green oh quick
develop ocean warm free minute strong special mind behind clear tail produce fact street inch
multiply nothing course stay wheel full force blue object decide surface deep moon island foot
system busy test record boat common gold possible plane stead dry wonder laugh thousand ago ran
check game shape equate hot miss brought heat snow tire bring yes distant fill east paint language
among today sky beach sunset party team win lost happy sad angry fear disgust surprise
""".split()  # noqa: SIM905 (a word list reads best as text)

#: the synthetic data set's caption words (openers, shapes, sentiment words, suffixes) and colours
SYNTHETIC_WORDS: tuple[str, ...] = (
    "look", "at", "this", "check", "out", "here", "is", "i", "saw", "behold", "today", "again", "now",
    "circle", "square", "triangle",
    "awful", "terrible", "sad", "ugly", "plain", "ordinary", "average", "simple",
    "lovely", "great", "wonderful", "happy",
    "red", "purple", "blue", "gray", "grey", "green", "yellow", "orange", "white", "black", "pink", "brown",
)

#: sentiment, emotion (MSED: happiness, sad, neutral, disgust, anger, fear) and desire
#: (MSED: vengeance, curiosity, social contact, family, romance, tranquility, none) vocabulary
AFFECT_WORDS: tuple[str, ...] = (
    "positive", "negative", "neutral", "happiness", "sadness", "anger", "fearful", "disgusting",
    "vengeance", "curiosity", "social", "contact", "romance", "tranquility", "none",
    "good", "bad", "beautiful", "nice", "hate", "love", "loved", "loving", "terrible", "horrible",
    "amazing", "awesome", "best", "worst", "excited", "enthusiastic", "athletes", "calm", "peaceful",
)

#: the whole-word part of the default vocabulary, in id order (duplicates removed)
DEFAULT_WORDS: tuple[str, ...] = tuple(dict.fromkeys((*_COMMON, *SYNTHETIC_WORDS, *AFFECT_WORDS)))


def build_vocabulary(words: Iterable[str] | None = None) -> dict[str, int]:
    """The deterministic token → id map described in the module docstring.

    ``words`` are appended after :data:`DEFAULT_WORDS`; they are lower-cased (the normaliser
    lower-cases the input) and must be single words without whitespace.
    """
    tokens: list[str] = [*SPECIAL_TOKENS, *CHARACTERS, *(CONTINUATION_PREFIX + c for c in CONTINUED_CHARACTERS)]
    extra: list[str] = []
    for i, word in enumerate(words or ()):
        if not isinstance(word, str) or not word or any(ch.isspace() for ch in word):
            raise ValueError(f"words[{i}]: expected a non-empty word without whitespace, got {word!r}")
        extra.append(word.lower())
    tokens.extend(DEFAULT_WORDS)
    tokens.extend(extra)
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


def build_wordpiece_tokenizer(
    words: Sequence[str] | None = None, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Build the offline BERT-style WordPiece tokenizer (no files are read or downloaded).

    Args:
        words: extra whole words appended to the default vocabulary (see :func:`build_vocabulary`).
        model_max_length: longest sequence the tokenizer produces when truncating.

    Returns:
        A ``PreTrainedTokenizerFast`` returning ``input_ids``, ``token_type_ids`` and
        ``attention_mask``; ``len(tokenizer)`` is the vocabulary size.
    """
    vocab = build_vocabulary(words)
    backend = Tokenizer(models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix=CONTINUATION_PREFIX))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    backend.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK,
        pad_token=PAD,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=MASK,
        model_max_length=model_max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
