"""openai/CLIP simple_tokenizer, without ftfy/regex (plain-ASCII prompts only).

Same BPE merges file as the C tokenizer (assets/clip/bpe_simple_vocab_16e6.txt.gz).
ids = [49406] + bpe ids[:75] + [49407], padded to 77 with 49407 (SD 1.x).
"""
import gzip
import html
import os
import re

BOS, EOS, MAX_LEN = 49406, 49407, 77
HERE = os.path.dirname(os.path.abspath(__file__))
MERGES = os.path.join(HERE, "..", "..", "assets", "clip", "bpe_simple_vocab_16e6.txt.gz")

# CLIP's pattern with \p{L} / \p{N} narrowed to ASCII letters and digits.
PAT = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+""",
                 re.IGNORECASE)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


class Tokenizer:
    def __init__(self, merges_path=MERGES):
        self.byte_encoder = bytes_to_unicode()
        merges = gzip.open(merges_path).read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in merges[1:49152 - 256 - 2 + 1]]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(self.ranks.get((a, b), 1e12), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            rank, _ = min(pairs)
            if rank == 1e12:
                break
            a, b = min(pairs)[1], None
            first, second = word[a], word[a + 1]
            new, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = new
        self.cache[token] = word
        return word

    def encode(self, text):
        text = html.unescape(html.unescape(text)).strip()
        text = re.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for tok in PAT.findall(text):
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids += [self.encoder[t] for t in self.bpe(tok)]
        return ids

    def __call__(self, text):
        ids = [BOS] + self.encode(text)[:MAX_LEN - 2] + [EOS]
        return ids + [EOS] * (MAX_LEN - len(ids))
