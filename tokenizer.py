"""Byte-level BPE (GPT-2 / RoBERTa) and WordPiece (BERT) tokenizers, trained and applied from scratch.

Both tokenizers turn text into integer ids in two stages:
  1. pre-tokenization: a fixed rule cuts the text into small chunks ("words"); no token ever crosses
     a chunk boundary, which is what makes training and encoding cheap (each distinct chunk is worked
     out once, then looked up).
  2. a learned vocabulary splits each chunk into subword tokens.

Byte-level BPE -- Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword
Units" (arXiv:1508.07909); made byte-level by GPT-2 (Radford et al. 2019, reference code
openai/gpt-2 `src/encoder.py`) and reused unchanged by RoBERTa (Liu et al. 2019, arXiv:1907.11692).
Training starts from the 256 byte values and repeatedly merges the most frequent adjacent pair into a
new token; encoding replays the learned merges on each chunk in the order they were learned. Because
the alphabet is all 256 bytes, every string has an encoding and decode(encode(s)) == s exactly.

WordPiece -- Schuster & Nakajima 2012 ("Japanese and Korean Voice Search"), as used by BERT (Devlin et
al. 2018, arXiv:1810.04805; reference code google-research/bert `tokenization.py`). BERT's "basic"
pre-tokenization (drop control characters, optional lowercasing and accent stripping, split on
whitespace and punctuation, every CJK ideograph on its own), then greedy longest-match-first with `##`
marking a token that continues a word; a word that cannot be covered, or is longer than 100
characters, becomes [UNK].

Files are the standard ones, loadable by other tools: vocab.json + merges.txt (GPT-2 / RoBERTa) and
vocab.txt (BERT). This file needs only the standard library and `regex` (for \\p{L}-style classes).

Differs from the reference:
  - BPE training (GPT-2 never released its trainer) follows Hugging Face `tokenizers`' BpeTrainer:
    same alphabet (all 256 bytes, in code point order after the specials), same tie rule (see
    `learn_merges`). On the test corpus and on the 4 MB benchmark the two vocabularies come out
    identical, id for id; that is tested on one corpus, not promised for every corpus.
  - WordPiece training uses BPE merges on word-initial / `##`-continuation symbols (what HF's
    WordPieceTrainer does), not Google's unreleased likelihood-based trainer. Why: it shares one tested
    merge learner with BPE, is fast with incremental counts, and the part that makes it "WordPiece" --
    greedy longest-match encoding with `##` -- is exactly BERT's.
  - Special tokens written inside the text ("<mask>", "[CLS]") are encoded as ordinary text, never
    as the special id (HF splits them out). Special ids are for code to insert, so encode/decode
    round-trips every string and user text cannot forge a control token.
  - WordPiece pre-tokenization mirrors HF's BertNormalizer / BertPreTokenizer (the reference we test
    against) where it differs in tiny ways from google-research/bert: accents are stripped before
    lowercasing, and the whitespace set is Unicode's White_Space property.
  - Character classes (letter, punctuation, nonspacing mark, ...) come from `regex`'s and Python's
    Unicode tables, which are newer than those compiled into HF tokenizers. Characters assigned in
    recent Unicode versions (e.g. U+2E4E, a Po since Unicode 14) can therefore split differently;
    everything in long-established scripts matches exactly (tested on Unicode 3.2 characters).
  - decode() of WordPiece ids glues `##` pieces and joins words with single spaces; it does not try to
    undo punctuation splitting (HF's "clean_up_tokenization_spaces").
"""
import json
import os
import unicodedata
from collections import Counter, defaultdict
from heapq import heapify, heappop, heappush

import regex

# --------------------------------------------------------------------------------------------------
# Shared: learning merges from counted chunks
# --------------------------------------------------------------------------------------------------


def _pairs(word):
    """Adjacent symbol pairs of a word: (a, b, c) -> (a, b), (b, c)."""
    return zip(word, word[1:])


def _merge_word(word, a, b, new):
    """Replace every non-overlapping occurrence of the pair (a, b), scanning left to right, by `new`.
    subtle: left to right matters for runs: merging (x, x) in x x x gives (xx, x), not (x, xx)."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _new_token(vocab, token_to_id, string):
    """Id of `string`, appending it to the vocabulary if new. subtle: two different merges can spell the
    same string ("a"+"bc" and "ab"+"c"); the second one reuses the id, so the vocabulary does not grow."""
    if string not in token_to_id:
        token_to_id[string] = len(vocab)
        vocab.append(string)
    return token_to_id[string]


def learn_merges_simple(word_counts, vocab, vocab_size, join, blocked=frozenset()):
    """The readable BPE learner: recount every pair of every distinct word before each merge.

    word_counts: {tuple of token ids: how often that chunk occurs}; vocab: list of token strings, grown
    in place; join(left_str, right_str) spells a merged token; merged strings in `blocked` (the special
    tokens) are never created. Returns the merges as a list of id pairs, in the order learned.
    Cost O(merges x corpus chunks) -- fine for tests; `learn_merges` is the fast path, tested equal.
    """
    token_to_id = {t: i for i, t in enumerate(vocab)}
    words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    merges = []
    while len(vocab) < vocab_size:
        counts = Counter()
        for word, f in zip(words, freqs):
            for pair in _pairs(word):
                counts[pair] += f
        candidates = [p for p in counts if join(vocab[p[0]], vocab[p[1]]) not in blocked]
        if not candidates:
            break  # every chunk is a single token: nothing left to merge
        # the tie rule, spelled out: highest count, then the smallest (left id, right id)
        a, b = min(candidates, key=lambda p: (-counts[p], p))
        new = _new_token(vocab, token_to_id, join(vocab[a], vocab[b]))
        words = [_merge_word(w, a, b, new) for w in words]
        merges.append((a, b))
    return merges


def learn_merges(word_counts, vocab, vocab_size, join, blocked=frozenset(), progress=False):
    """Fast path of `learn_merges_simple` (same arguments, same result -- tested).

    Two ideas make it fast enough for 4 MB -> 8,000 tokens in seconds in pure Python:
      - the corpus is a handful of distinct chunks with counts (done by the caller), and
      - pair counts are kept up to date incrementally: merging (a, b) only changes words that contain
        (a, b); `where[pair]` indexes those words, and only their pair counts are adjusted.
    The most frequent pair comes from a heap of (-count, pair) with lazy deletion: an entry is pushed
    whenever a pair's count grows, and a popped entry whose count is out of date is re-pushed with its
    current count (or dropped at zero). Every live pair thus has an entry whose count is >= its true
    count, so the first up-to-date entry popped is the true maximum.

    subtle: tie-breaking. Among equally frequent pairs the smallest (left id, right id) wins, i.e. the
    pair of the earliest-created tokens (the heap orders (-count, a, b) tuples). HF tokenizers'
    BpeTrainer uses the same rule on its ids; with different rules two trainers drift apart after the
    first tie, though their compression stays the same.
    """
    token_to_id = {t: i for i, t in enumerate(vocab)}
    words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    pair_counts = defaultdict(int)
    where = defaultdict(set)  # pair -> indices of words that contain it (may hold stale indices)
    for i, (word, f) in enumerate(zip(words, freqs)):
        for pair in _pairs(word):
            pair_counts[pair] += f
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapify(heap)
    skip = set()  # pairs whose merged string is a special token

    bar = None
    if progress:
        try:
            from tqdm import tqdm  # optional: this file must work with stdlib + regex alone
            bar = tqdm(total=max(vocab_size - len(vocab), 0), desc="merges", unit="tok")
        except ImportError:
            pass

    merges = []
    while len(vocab) < vocab_size and heap:
        neg, pair = heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -neg:  # stale entry: the pair's count fell since this was pushed
            if count > 0:
                heappush(heap, (-count, pair))
            continue
        if pair in skip:
            continue
        a, b = pair
        string = join(vocab[a], vocab[b])
        if string in blocked:
            skip.add(pair)
            continue
        size_before = len(vocab)
        new = _new_token(vocab, token_to_id, string)
        merges.append(pair)
        before = {}  # count of each touched pair before this merge, to know which ones grew
        for i in where.pop(pair):
            word = words[i]
            merged = _merge_word(word, a, b, new)
            if len(merged) == len(word):
                continue  # stale index: an earlier merge already consumed this word's (a, b)
            f = freqs[i]
            for p in _pairs(word):
                before.setdefault(p, pair_counts[p])
                pair_counts[p] -= f
            for p in _pairs(merged):
                before.setdefault(p, pair_counts[p])
                pair_counts[p] += f
                where[p].add(i)
            words[i] = merged
        pair_counts.pop(pair, None)
        for p, c in before.items():
            if pair_counts[p] > c:
                heappush(heap, (-pair_counts[p], p))
        if bar is not None:
            bar.update(len(vocab) - size_before)
    if bar is not None:
        bar.close()
    return merges


# --------------------------------------------------------------------------------------------------
# Shared: the id <-> token table and special tokens
# --------------------------------------------------------------------------------------------------


class _Vocab:
    """What both tokenizers share: the token table, special-token ids, decode checks, batching."""

    kind = None
    SPECIALS = {}  # attribute name -> special token string, set by subclasses

    def _init_vocab(self, id_to_token, special_tokens):
        self._id_to_token = list(id_to_token)
        self._token_to_id = {t: i for i, t in enumerate(self._id_to_token)}
        present = [t for t in special_tokens if t in self._token_to_id]
        self.special_tokens = present
        self.special_ids = [self._token_to_id[t] for t in present]
        self._special_set = set(self.special_ids)
        for attr, token in self.SPECIALS.items():
            setattr(self, attr, self._token_to_id.get(token))  # None when the vocab lacks it
        self._word_start = None

    def __len__(self):
        return len(self._id_to_token)

    def token_to_id(self, token):
        return self._token_to_id.get(token)

    def id_to_token(self, id):
        self._check_ids([id])
        return self._id_to_token[id]

    def _check_ids(self, ids):
        n = len(self._id_to_token)
        for i in ids:
            if not (isinstance(i, int) and 0 <= i < n):
                raise ValueError(f"token id {i!r} is outside the vocabulary (valid ids: 0..{n - 1})")

    @staticmethod
    def _check_text(text):
        """A lone surrogate is not Unicode text (it cannot be UTF-8 encoded; it comes from bytes decoded
        with errors="surrogateescape"): refuse it with its position rather than guess."""
        m = _LONE_SURROGATE.search(text)
        if m:
            raise ValueError(f"text has a lone surrogate U+{ord(m.group()):04X} at position {m.start()}, "
                             f"which is not valid Unicode; decode the bytes with errors='replace' instead")

    def encode_batch(self, texts):
        """Encode many texts; shares the per-chunk cache, so repeated words cost one dict lookup."""
        return [self.encode(t) for t in texts]

    def word_start_flags(self):
        """list[bool] indexed by id: does this token begin a word? (for whole-word masking)"""
        if self._word_start is None:
            self._word_start = [self._starts_word(i, t) for i, t in enumerate(self._id_to_token)]
        return self._word_start

    def is_word_start(self, id):
        self._check_ids([id])
        return self.word_start_flags()[id]

    def _cached(self, cache, key, compute):
        """Look up a chunk's tokens; bound the cache so a huge stream of distinct words cannot grow it
        without limit (clearing is crude but keeps the hot path to one dict lookup)."""
        hit = cache.get(key)
        if hit is None:
            if len(cache) >= 200_000:
                cache.clear()
            hit = cache[key] = compute(key)
        return hit


# --------------------------------------------------------------------------------------------------
# Byte-level BPE
# --------------------------------------------------------------------------------------------------

# GPT-2's pre-tokenization (openai/gpt-2 src/encoder.py): English contractions, then runs of letters,
# of digits, of other non-space symbols -- each optionally led by ONE space, so " hello" is one chunk
# and the space lives in the word's first token -- then whitespace. `\s+(?!\S)` takes a run of spaces
# but leaves its last space to lead the next word: "a   b" -> "a", "  ", " b".
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode():
    """A fixed map from each of the 256 byte values to a printable unicode character.

    Why: BPE works on bytes, but vocab.json and merges.txt are text files in which a token like
    b" \\n\\x00" cannot be written plainly (space is merges.txt's separator, newlines end lines, NUL
    and other controls are invisible or rejected by tools). GPT-2 maps the 188 bytes that are already
    printable, non-space Latin-1 characters to themselves and the 68 others (controls, space,
    0x7F-0xA0, soft hyphen) to the characters 256, 257, ... in order. So byte 0x20 (space) is 'Ġ'
    (chr(288)), newline is 'Ċ' -- which is why GPT-2/RoBERTa tokens look like 'Ġthe'.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_ENCODER = bytes_to_unicode()                        # byte value -> char
BYTE_DECODER = {c: b for b, c in BYTE_ENCODER.items()}   # char -> byte value
# The 256 byte tokens in code point order: GPT-2's encoder.json starts this way, and it fixes the ids
# that break ties in training.
BYTE_ALPHABET = sorted(BYTE_ENCODER.values())


class BPETokenizer(_Vocab):
    """Byte-level BPE as in GPT-2 and RoBERTa.

    vocab: {token string: id} with ids 0..N-1; merges: [(left, right)] in learned order.
    special_tokens: strings that are special (never produced by a merge). None infers them: every
    vocabulary entry that is neither a byte token nor a merge result (GPT-2: '<|endoftext|>';
    RoBERTa: '<s>', '<pad>', '</s>', '<unk>', '<mask>').
    """

    kind = "bpe"
    DEFAULT_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's, with its ids 0..4
    # subtle: RoBERTa's <s> and </s> play BERT's [CLS] and [SEP]: one sentence is <s> A </s>, a pair is
    # <s> A </s></s> B </s>.
    SPECIALS = {"pad_id": "<pad>", "unk_id": "<unk>", "mask_id": "<mask>", "cls_id": "<s>",
                "sep_id": "</s>", "bos_id": "<s>", "eos_id": "</s>"}

    def __init__(self, vocab, merges, special_tokens=None):
        by_id = sorted(vocab, key=vocab.get)
        merges = [tuple(m) for m in merges]
        if special_tokens is None:
            built = set(BYTE_ALPHABET) | {a + b for a, b in merges}
            special_tokens = [t for t in by_id if t not in built]
        self._init_vocab(by_id, special_tokens)
        self.merges = merges
        self.ranks = {}
        for rank, pair in enumerate(merges):
            self.ranks.setdefault(pair, rank)  # a repeated merge keeps its first (best) rank
        missing = [c for c in BYTE_ALPHABET if c not in self._token_to_id]
        if missing:
            raise ValueError(f"not a byte-level BPE vocabulary: {len(missing)} of the 256 byte tokens "
                             f"are missing (e.g. {missing[0]!r}), so some text could not be encoded")
        self._split = regex.compile(GPT2_SPLIT)
        self._cache = {}

    # ---- training ----------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts, vocab_size, special_tokens=None, progress=False):
        """Learn a vocabulary of `vocab_size` tokens (specials + 256 bytes + merges) from `texts`, any
        iterable of strings (a list, a generator over a file's lines, ...)."""
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of strings, not one string (wrap it in a list)")
        specials = list(cls.DEFAULT_SPECIALS if special_tokens is None else special_tokens)
        if len(set(specials)) != len(specials) or set(specials) & set(BYTE_ALPHABET):
            raise ValueError(f"special tokens must be distinct and not single byte tokens: {specials}")
        vocab = specials + BYTE_ALPHABET
        if vocab_size < len(vocab):
            raise ValueError(f"vocab_size={vocab_size} is too small: the minimum is {len(vocab)} "
                             f"({len(specials)} special tokens + 256 byte tokens)")
        split = regex.compile(GPT2_SPLIT)
        chunk_counts = Counter()
        for text in texts:  # count each distinct chunk once; training never looks at the text again
            chunk_counts.update(split.findall(text))
        if not chunk_counts:
            raise ValueError("cannot train on an empty corpus (no text, or only empty strings)")
        byte_id = {b: vocab.index(BYTE_ENCODER[b]) for b in range(256)}
        word_counts = {tuple(byte_id[b] for b in chunk.encode("utf-8")): n
                       for chunk, n in chunk_counts.items()}
        merges = learn_merges(word_counts, vocab, vocab_size, lambda a, b: a + b,
                              blocked=set(specials), progress=progress)
        return cls({t: i for i, t in enumerate(vocab)}, [(vocab[a], vocab[b]) for a, b in merges],
                   special_tokens=specials)

    # ---- encoding ----------------------------------------------------------------------------------

    def bpe(self, chunk):
        """Token strings of one pre-token chunk: start from its bytes (as byte-level characters) and
        apply the best-ranked (earliest learned) merge present, everywhere in the chunk, until none
        applies. This replays training's decisions, so a training chunk gets the split training made."""
        symbols = [BYTE_ENCODER[b] for b in chunk.encode("utf-8")]
        while len(symbols) > 1:
            best = min(_pairs(symbols), key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            symbols = _merge_word(symbols, best[0], best[1], best[0] + best[1])
        return symbols

    def _chunk_ids(self, chunk):
        return [self._token_to_id[t] for t in self.bpe(chunk)]

    def encode(self, text):
        """Ids of `text` (no special tokens added). Each distinct chunk is BPE'd once, then cached.
        Any str that can be UTF-8 encoded works; a lone surrogate (not valid Unicode text) raises
        ValueError."""
        self._check_text(text)
        ids = []
        for chunk in self._split.findall(text):
            ids.extend(self._cached(self._cache, chunk, self._chunk_ids))
        return ids

    def tokenize(self, text):
        return [self._id_to_token[i] for i in self.encode(text)]

    def decode(self, ids):
        """Text of `ids`: concatenate the tokens' bytes and read them as UTF-8. A special token decodes
        to its own text. Bytes that are not valid UTF-8 (a sequence cut inside a character) become
        U+FFFD rather than raising, as in GPT-2."""
        ids = list(ids)
        self._check_ids(ids)
        out = bytearray()
        for i in ids:
            token = self._id_to_token[i]
            if i in self._special_set:
                out += token.encode("utf-8")
            else:
                out += bytes(BYTE_DECODER[c] for c in token)
        return out.decode("utf-8", errors="replace")

    def _starts_word(self, id, token):
        # 'Ġ' is the space byte: GPT-2's split puts a word's leading space into its first token. The
        # same test as fairseq's whole-word masking for RoBERTa (a token starts a word if it is special
        # or decodes to text starting with a space).
        # subtle: a word with no space before it (the text's first word, one after a newline or a
        # bracket) is not flagged, so whole-word masking groups it with the token before it.
        return id in self._special_set or token.startswith("Ġ")

    # ---- files -------------------------------------------------------------------------------------

    def save(self, directory):
        """Write vocab.json + merges.txt in the GPT-2/RoBERTa layout, and tokenizer_config.json +
        special_tokens_map.json so that HF's AutoTokenizer loads them as RoBERTa's tokenizer (whatever
        the model type beside them) and gives our ids."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump({t: i for i, t in enumerate(self._id_to_token)}, f, ensure_ascii=False)
        with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            f.writelines(f"{a} {b}\n" for a, b in self.merges)
        if set(self.SPECIALS.values()) <= set(self.special_tokens):  # (RoBERTa's specials: not GPT-2's)
            _write_hf_tokenizer_config(directory, "RobertaTokenizer", self.SPECIALS, add_prefix_space=False)

    @classmethod
    def load(cls, directory):
        return cls.from_files(os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt"))

    @classmethod
    def from_files(cls, vocab_json, merges_txt):
        """Load vocab.json + merges.txt (RoBERTa) or encoder.json + vocab.bpe (GPT-2): same format."""
        vocab = _read_vocab_json(vocab_json)
        merges = []
        with open(merges_txt, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if (lineno == 1 and line.startswith("#version")) or not line:
                    continue
                parts = line.split(" ")
                if len(parts) != 2 or not all(parts):
                    raise ValueError(f"{merges_txt}:{lineno}: expected two tokens separated by one "
                                     f"space, got {line!r}")
                for t in (parts[0], parts[1], parts[0] + parts[1]):
                    if t not in vocab:
                        raise ValueError(f"{merges_txt}:{lineno}: token {t!r} of merge {line!r} is "
                                         f"not in {vocab_json}")
                merges.append((parts[0], parts[1]))
        return cls(vocab, merges)


def _write_hf_tokenizer_config(directory, tokenizer_class, specials, **settings):
    """tokenizer_config.json and special_tokens_map.json with HF's field names: the tokenizer class
    (AutoTokenizer picks it over the model type), the special tokens by role, and `settings`.

    subtle: RoBERTa's <mask> is marked lstrip: the space before it belongs to the masked word
    ("not to <mask>," must give 'Ġto', '<mask>', not 'Ġto', 'Ġ', '<mask>': a sequence the model never saw
    in training, where <mask> replaced the word's own Ġ-token)."""
    roles = {"bos_token": "bos_id", "eos_token": "eos_id", "sep_token": "sep_id", "cls_token": "cls_id",
             "unk_token": "unk_id", "pad_token": "pad_id", "mask_token": "mask_id"}
    tokens = {role: specials[attr] for role, attr in roles.items()}
    if tokenizer_class == "RobertaTokenizer":
        tokens["mask_token"] = {"content": tokens["mask_token"], "lstrip": True, "rstrip": False,
                                "normalized": False, "single_word": False, "special": True}
    else:  # (BERT's files name only its own five)
        tokens = {k: v for k, v in tokens.items() if k not in ("bos_token", "eos_token")}
    for name, body in (("tokenizer_config.json", {"tokenizer_class": tokenizer_class, **tokens, **settings}),
                       ("special_tokens_map.json", tokens)):
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2, ensure_ascii=False)


def _read_vocab_json(path):
    """{token: id} from a vocab.json, checked: ids must be the distinct integers 0..N-1."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    def no_duplicate_keys(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValueError(f"{path}:{_line_of_key(text, dup)}: token {dup!r} appears twice")
        return dict(pairs)

    try:
        vocab = json.loads(text, object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(vocab, dict) or not vocab:
        raise ValueError(f"{path}:1: expected a non-empty JSON object {{token: id}}")
    seen = {}
    for token, i in vocab.items():
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(vocab):
            line = _line_of_key(text, token)
            raise ValueError(f"{path}:{line}: id {i!r} of token {token!r} is not an integer in "
                             f"0..{len(vocab) - 1}")
        if i in seen:
            raise ValueError(f"{path}: tokens {seen[i]!r} and {token!r} share the id {i}")
        seen[i] = token
    return vocab


def _line_of_key(text, key):
    """1-based line of `"key":` in a JSON text (written with or without \\u escapes), else 1."""
    for quoted in (json.dumps(key, ensure_ascii=False), json.dumps(key)):
        found = regex.search(regex.escape(quoted) + r"\s*:", text)
        if found:
            return text.count("\n", 0, found.start()) + 1
    return 1


# --------------------------------------------------------------------------------------------------
# WordPiece
# --------------------------------------------------------------------------------------------------

# BERT's basic tokenizer, written as three regular expressions (google-research/bert tokenization.py
# does the same character by character; HF's BertNormalizer + BertPreTokenizer are what we match).
# Dropped: NUL, U+FFFD, controls (Cc), format characters such as the zero-width joiner (Cf), private
# use (Co) and lone surrogates (Cs; encode refuses them before) -- except tab / newline / carriage
# return, which count as spaces.
# subtle: unassigned code points (Cn) are kept, as HF does; which code points are unassigned depends on
# the Unicode version of each library, so text from the newest scripts may still differ at the edges.
_LONE_SURROGATE = regex.compile("[\ud800-\udfff]")  # not Unicode text: encode() refuses it
_WP_DROP = regex.compile(r"[\x00\ufffd]|(?![\t\n\r])[\p{Cc}\p{Cf}\p{Co}\p{Cs}]")
# Whitespace: Unicode's White_Space property (what HF uses), minus the controls already dropped.
_WS = r"\t\n\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Punctuation: all Unicode P* categories plus every ASCII non-alphanumeric printable ($, +, <, ^, ...).
_PUNCT = r"\p{P}!-/:-@\[-`{-~"
# CJK ideographs (google-research/bert `_is_chinese_char`): each becomes its own word. Not Hangul,
# kana or Thai, which are written with spaces or need more than characters to segment.
# subtle: BERT's list has U+2B820..U+2CEAF (Extension E); HF tokenizers (checked on 0.23.3) starts
# that block at U+2B920, leaving U+2B820..U+2B91F inside words. We follow HF, the reference we test
# against; the 256 code points concerned are rare ideographs.
_CJK = (r"\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f"
        r"\U0002b740-\U0002b81f\U0002b920-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f")
_WP_SPLIT = regex.compile(rf"[{_CJK}]|[{_PUNCT}]|[^{_WS}{_PUNCT}{_CJK}]+")
_NONSPACING_MARK = regex.compile(r"\p{Mn}")


class WordPieceTokenizer(_Vocab):
    """WordPiece as in BERT.

    vocab: token strings in id order. lowercase: fold case. strip_accents: remove accents via NFD and
    dropping the combining marks; None follows `lowercase` (BERT's rule: uncased models strip accents).

    subtle: stripping accents applies NFD, and NFD also splits every Hangul syllable into its
    conjoining jamo ('한' -> 'ᄒ' 'ᅡ' 'ᆫ'), which are letters and so survive the mark removal. BERT's
    uncased vocabularies were built that way, so `from_file(..., lowercase=True)` does the same (and
    matches HF exactly), but a Korean vocabulary trained like that learns jamo, not syllables. Hence
    `train` defaults to lowercase=False (no NFD); for caseless Latin plus intact Hangul pass
    lowercase=True, strip_accents=False.
    """

    kind = "wordpiece"
    SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4 in trained vocabs
    SPECIALS = {"pad_id": "[PAD]", "unk_id": "[UNK]", "mask_id": "[MASK]", "cls_id": "[CLS]",
                "sep_id": "[SEP]", "bos_id": "[CLS]", "eos_id": "[SEP]"}
    PREFIX = "##"               # marks a token that continues a word
    MAX_WORD_CHARS = 100        # longer words become [UNK] (BERT's max_input_chars_per_word)

    def __init__(self, vocab, lowercase=True, strip_accents=None):
        if isinstance(vocab, dict):  # {token: id} also accepted
            vocab = sorted(vocab, key=vocab.get)
        self._init_vocab(vocab, self.SPECIAL_TOKENS)
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self._max_len = max(len(t) for t in self._id_to_token)
        self._cache = {}

    # ---- pre-tokenization --------------------------------------------------------------------------

    def pre_tokenize(self, text):
        """BERT's basic tokenization: the list of words WordPiece will split."""
        text = _WP_DROP.sub("", text)
        if self.strip_accents:
            text = _NONSPACING_MARK.sub("", unicodedata.normalize("NFD", text))
        if self.lowercase:
            # subtle: str.lower() turns a word-final 'Σ' into 'ς' (a context rule); BERT/HF lowercase
            # character by character, giving 'σ'. Only Σ has such a rule in Python.
            text = "".join(c.lower() for c in text) if "Σ" in text else text.lower()
        return _WP_SPLIT.findall(text)

    # ---- encoding ----------------------------------------------------------------------------------

    def wordpiece(self, word):
        """Greedy longest-match-first: take the longest vocabulary token that starts the rest of the
        word (with '##' unless at the word's start), repeat. If some position has no match, the WHOLE
        word becomes [UNK] (not just the uncovered part), as in BERT."""
        if len(word) > self.MAX_WORD_CHARS:
            return [self._unk_token()]
        pieces, start = [], 0
        while start < len(word):
            end = min(len(word), start + self._max_len)
            while end > start:
                piece = word[start:end] if start == 0 else self.PREFIX + word[start:end]
                if piece in self._token_to_id:
                    break
                end -= 1
            else:
                return [self._unk_token()]
            pieces.append(piece)
            start = end
        return pieces

    def _unk_token(self):
        if self.unk_id is None:
            raise ValueError("this vocabulary has no [UNK] token, and the text has a word it cannot cover")
        return "[UNK]"

    def _word_ids(self, word):
        return [self._token_to_id[t] for t in self.wordpiece(word)]

    def encode(self, text):
        """Ids of `text` (no special tokens added); each distinct word is split once, then cached. A lone
        surrogate (not valid Unicode text) raises ValueError."""
        self._check_text(text)
        ids = []
        for word in self.pre_tokenize(text):
            ids.extend(self._cached(self._cache, word, self._word_ids))
        return ids

    def tokenize(self, text):
        return [self._id_to_token[i] for i in self.encode(text)]

    def decode(self, ids):
        """Tokens joined by spaces, with '##' pieces glued to the previous token. Lossy by design:
        case, accents, control characters and spacing around punctuation are not recovered."""
        ids = list(ids)
        self._check_ids(ids)
        out = []
        for i in ids:
            token = self._id_to_token[i]
            if token.startswith(self.PREFIX) and out:
                out.append(token[len(self.PREFIX):])
            else:
                out.append((" " if out else "") + token)
        return "".join(out)

    def _starts_word(self, id, token):
        return not token.startswith(self.PREFIX)

    # ---- training ----------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts, vocab_size, lowercase=False, strip_accents=None, progress=False):
        """Learn a WordPiece vocabulary from `texts` (iterable of strings).

        Algorithm (HF's WordPieceTrainer): pre-tokenize and count words; spell each word as its first
        character followed by '##'-prefixed characters ('cat' -> c ##a ##t); learn BPE merges on those
        symbols, where merging (x, ##y) spells 'xy' and (##x, ##y) spells '##xy'. The vocabulary is
        the specials, every character in its start and continuation forms, then the merged tokens.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of strings, not one string (wrap it in a list)")
        tok = cls(cls.SPECIAL_TOKENS, lowercase=lowercase, strip_accents=strip_accents)
        word_counts = Counter()
        for text in texts:
            word_counts.update(tok.pre_tokenize(text))
        words = {w: n for w, n in word_counts.items() if len(w) <= cls.MAX_WORD_CHARS}
        if not words:
            raise ValueError("cannot train on an empty corpus (no words after pre-tokenization)")
        starts = sorted({w[0] for w in words})
        continues = sorted({cls.PREFIX + c for w in words for c in w[1:]})
        vocab = list(cls.SPECIAL_TOKENS) + starts + continues
        if vocab_size < len(vocab):
            raise ValueError(
                f"vocab_size={vocab_size} is too small for this corpus: the minimum is {len(vocab)} "
                f"({len(cls.SPECIAL_TOKENS)} special tokens + {len(starts)} word-initial characters + "
                f"{len(continues)} '##' continuation characters)")
        index = {t: i for i, t in enumerate(vocab)}
        symbol_counts = {tuple([index[w[0]]] + [index[cls.PREFIX + c] for c in w[1:]]): n
                         for w, n in words.items()}
        learn_merges(symbol_counts, vocab, vocab_size, cls._join, blocked=set(cls.SPECIAL_TOKENS),
                     progress=progress)
        return cls(vocab, lowercase=lowercase, strip_accents=strip_accents)

    @classmethod
    def _join(cls, left, right):
        return left + right[len(cls.PREFIX):]  # right always carries '##': it continues a word

    # ---- files -------------------------------------------------------------------------------------

    def save(self, directory):
        """Write vocab.txt (one token per line, line k = id k-1) and tokenizer_config.json with HF's
        field names for the casing settings (a vocab.txt alone does not say whether it is cased)."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
            f.writelines(t + "\n" for t in self._id_to_token)
        _write_hf_tokenizer_config(directory, "BertTokenizer", self.SPECIALS, do_lower_case=self.lowercase,
                                   strip_accents=self.strip_accents)

    @classmethod
    def load(cls, directory):
        config = {}
        path = os.path.join(directory, "tokenizer_config.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        return cls.from_file(os.path.join(directory, "vocab.txt"),
                             lowercase=config.get("do_lower_case", True),
                             strip_accents=config.get("strip_accents"))

    @classmethod
    def from_file(cls, vocab_txt, lowercase=True, strip_accents=None):
        """Load a BERT vocab.txt: line k holds the token with id k-1."""
        tokens, first_line = [], {}
        with open(vocab_txt, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                token = line.rstrip("\r\n")
                if not token or token != token.strip():
                    raise ValueError(f"{vocab_txt}:{lineno}: token {token!r} is empty or has "
                                     f"surrounding whitespace")
                if token in first_line:
                    raise ValueError(f"{vocab_txt}:{lineno}: duplicate token {token!r} (first on line "
                                     f"{first_line[token]})")
                first_line[token] = lineno
                tokens.append(token)
        if not tokens:
            raise ValueError(f"{vocab_txt}:1: the vocabulary file is empty")
        return cls(tokens, lowercase=lowercase, strip_accents=strip_accents)


def load_tokenizer(directory):
    """The tokenizer saved in `directory`: BPE if it has vocab.json + merges.txt, else WordPiece."""
    if all(os.path.exists(os.path.join(directory, f)) for f in ("vocab.json", "merges.txt")):
        return BPETokenizer.load(directory)
    if os.path.exists(os.path.join(directory, "vocab.txt")):
        return WordPieceTokenizer.load(directory)
    raise FileNotFoundError(f"{directory}: no tokenizer files (vocab.json + merges.txt, or vocab.txt)")


if __name__ == "__main__":
    # A toy corpus; real vocabularies come from megabytes of text (see bench/bench_tokenizer.py).
    corpus = ["the cat sat on the mat", "the dog sat on the log", "cats and dogs"] * 20
    bpe = BPETokenizer.train(corpus, vocab_size=280)  # 5 specials + 256 bytes + 19 merges
    ids = bpe.encode("the cats sat")
    print("BPE:      ", bpe.tokenize("the cats sat"), ids, repr(bpe.decode(ids)))
    odd = "naïve 🍕 한국어\x00"  # never seen in training: falls back to bytes, still round-trips
    print("BPE round trip:", bpe.decode(bpe.encode(odd)) == odd, len(bpe.encode(odd)), "tokens")
    wp = WordPieceTokenizer.train(corpus, vocab_size=40, lowercase=True)
    ids = wp.encode("The cats sat on a log!")  # '!' never occurs in the corpus: [UNK]
    print("WordPiece:", wp.tokenize("The cats sat on a log!"), ids)
    print(" " * 10, repr(wp.decode(ids)))

# Expected output:
# BPE:       ['the', 'Ġcat', 's', 'Ġsat'] [263, 276, 87, 272] 'the cats sat'
# BPE round trip: True 22 tokens
# WordPiece: ['the', 'cats', 'sat', 'on', 'a', 'log', '[UNK]'] [24, 33, 29, 28, 5, 31, 1]
#            'the cats sat on a log [UNK]'
