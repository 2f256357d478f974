#!/usr/bin/python3
"""Reference prompt schedules: runs A1111's modules/prompt_parser.py itself on a
corpus of prompts and writes tests/data/prompt_schedules.tsv.

What it runs (upstream, unmodified, imported from outside the project):
  get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps)
  get_multicond_prompt_list(prompts)            (the AND split and weights)
  reconstruct_cond_batch(schedule, step)        (which entry a denoiser call uses)
from AUTOMATIC1111/stable-diffusion-webui modules/prompt_parser.py (the copy of
commit 28bd8e142d5f77b71ae8d7d7140b5da1b3a49906; same grammar and scheduling
as the pinned 73c74baa, see tests/data/README.md#prompt-schedules), with
lark 1.1.5 (Debian python3-lark) and torch 1.13.

Re-run:  A1111_MODULES=/path/to/dir/with/prompt_parser.py \
         /usr/bin/python3 tools/ref/prompt_schedules.py > tests/data/prompt_schedules.tsv

Each line: PROMPT_JSON <TAB> STEPS <TAB> HIRES_STEPS (0 = none) <TAB> RESULT_JSON
RESULT = {"and": [[text, weight]...], "parts": [schedule of each AND part],
          "whole": schedule of the unsplit prompt (what a negative prompt gets),
          "idx": [reconstruct_cond_batch index of "whole" at calls 0..steps+1]}
a schedule is [[end_at_step, text], ...]; or RESULT = {"error": "ExceptionName"}
when A1111 raises (then fmimage must refuse the prompt).

A1111's answer is not always one answer: when a group touches stray top-level
brackets or colons ("[a:b:2]]"), lark's Earley parser has several parses and
picks one by the iteration order of a set, which follows Python's string hash
seed. Every case is therefore run under PYTHONHASHSEED 0..7; when they differ
RESULT = {"any": [each distinct result]} and any of them is A1111's behaviour.
"""
import subprocess
import json
import os
import random
import sys

sys.path.insert(0, os.environ.get("A1111_MODULES", "/tmp/psched/a1111"))
import torch  # noqa: E402  (prompt_parser imports torch when not __main__)
import prompt_parser as pp  # noqa: E402

# Every example of the A1111 wiki "Features" page sections Prompt editing,
# Alternating words and Composable diffusion, plus the module comment's.
WIKI = [
    ("a [fantasy:cyberpunk:16] landscape", 20),
    ("a [fantasy:cyberpunk:16] landscape", 30),
    ("a [fantasy:cyberpunk:0.25] landscape", 20),
    ("[to:when]", 20),
    ("[from::when]", 20),
    ("[from:to:when]", 20),
    ("a [cyberpunk:16] landscape", 20),
    ("a [fantasy::16] landscape", 20),
    ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]", 100),
    ("a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]", 100),
    ("a [fantasy:[cyberpunk:steampunk:16]:8] landscape", 30),
    ("[cow|horse] in a field", 20),
    ("[cow|cow|horse|man|siberian tiger|ox|man] in a field", 20),
    ("[cow|horse] in a field", 7),
    ("a cat AND a dog", 20),
    ("a cat :1.2 AND a dog AND a penguin :2.2", 20),
    ("a cat AND a dog :0.5", 20),
    ("a red crown", 20),
    ("a [blue:green:5] jeweled crown", 20),
    ("[big strawberry:skull:0.5] hanging from a tree", 40),
    ("[big strawberry:skull:20] hanging from a tree", 40),
    ("a [fantasy:cyberpunk:1.5] landscape", 20),
]

# The doctests of get_learned_conditioning_prompt_schedules (steps 10; the
# last two with hires_steps 10).
DOCTESTS = [
    "test", "a [b:3]", "a [b: 3]", "a [[[b]]:2]", "[(a:2):3]", "a [b : c : 1] d",
    "a[b:[c:d:2]:1]e", "a [unbalanced", "a [b:.5] c", "a [{b|d{:.5] c",
    "((a][:b:c [d:3]", "[a|(b:1.1)]", "[fe|]male", "[fe|||]male",
]

HAND = [
    "", " ", "AND", "AND AND", " AND ", "a AND", "AND b", "aANDb", "a ANDb", "a_AND b", "a AND_b",
    "a:1 AND b", "a : 1.5", "a :-0.5 AND b:+2", "a:1.2.3", "a:.", "a:1.", "a:.5 ", "a :5x", "(a:1.2) AND [b:c:3]",
    "a AND b AND c AND d", "x\nAND\ny:2\n", "a\tAND\tb", "[a:b:1e309]", "[a:b:1e308]", "[a:b:-3]",
    "[a:b:0]", "[a:b:1]", "[a:b:0.999]", "[a:b:+2]", "[a:b:2.]", "[a:b:1e1]", "[a:b:1.5e1]", "[a:b:1e-5]",
    "[a:b:3 ]", "[a:b: 3 ]", "[a:b:3x]", "[a:b:c]", "[a:b]", "[a:b:c:3]", "[:b:3]", "[a::3]", "[::3]", "[:3]",
    "[a|b:3]", "[a|b]:3]", "[a|[b:c:2]]", "[[a|b]:[c|d]:5]", "[a|b|c]", "[a||b]", "[|a]", "[|]", "[a|]",
    "a|b", "(a|b)", "([a|b])", "[(a|b)]", "\\[a:b:2]", "[a\\:b:2]", "[a:b\\:2]", "a\\", "a\\\nb", "\\(x\\)",
    "[a\\]b:2]", "[a:b:2]]", "[[a:b:2]", "[[a:b:2]]", "((([a:b:2])))", "(a:[b:c:2])", "(a:b:[c:d:2])",
    "[a(:b:2]", "[a(b):c:2]", "[a (b:1.2) c:d:3]", "[a [b] c:d:3]", "[a BREAK b:c:2]", "a BREAK [b|c]",
    "[a:b:2] BREAK [c:d:3]", "]", "[", ")", "(", ":", "][", "[]", "()", "[:]", "[[]]", "[ ]", "[a: 3]", "[a:3 ]",
    "[a:\t3\t]", "[a:\n3]", "[a: b :3]", "é [ü:ß:2] 日本", "éAND b", "a ANDé", "[a:b:٣]", "a :٣ AND b",
    "[a:b:5][c:d:5][e:f:5]", "[a:[b:[c:[d:e:4]:3]:2]:1]", "[[[[a:b:4]:c:3]:d:2]:e:1]", "[a|[b|[c|d]]]",
    "[a:b:10]", "[a:b:11]", "[a:b:100]", "[a:b:0.5][c|d]", "[ [a:b:2] ]", "[a:(b:1.5):2]",
]

WORDS = ["a", "cat", "dog", "red", " ", "  ", "fox", "BREAK", "AND", "e", "1", "é"]
NUMS = ["1", "2", "3", "5", "0.5", ".25", "0.75", "1.5", "10", "-1", "0", "1e1", "2.", " 4", "4 ", "99"]


def gen_construct(rng, depth):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return "".join(rng.choice(WORDS) for _ in range(rng.randint(0, 3)))
    k = rng.randint(0, 6)
    sub = lambda: gen_seq(rng, depth + 1)  # noqa: E731
    if k == 0:
        return "[" + sub() + ":" + sub() + ":" + rng.choice(NUMS) + "]"
    if k == 1:
        return "[" + sub() + ":" + rng.choice(NUMS) + "]"
    if k == 2:
        return "[" + sub() + "::" + rng.choice(NUMS) + "]"
    if k == 3:
        return "[" + "|".join(sub() for _ in range(rng.randint(2, 4))) + "]"
    if k == 4:
        return "(" + sub() + (":" + rng.choice(["1.2", "0.5", "2"]) if rng.random() < 0.5 else "") + ")"
    if k == 5:
        return "[" + sub() + "]"
    return "\\" + rng.choice("[]():\\") + sub()


def gen_seq(rng, depth):
    return "".join(gen_construct(rng, depth) for _ in range(rng.randint(1, 3)))


def mutate(rng, s):
    ops = rng.randint(1, 2)
    for _ in range(ops):
        i = rng.randint(0, len(s))
        if rng.random() < 0.5 and s:
            s = s[:i] + s[i + 1:]
        else:
            s = s[:i] + rng.choice("[]():|\\ a1.") + s[i:]
    return s


def sched(prompt, steps, hires):
    return pp.get_learned_conditioning_prompt_schedules([prompt], steps, hires if hires else None)[0]


def result(prompt, steps, hires):
    try:
        res_indexes, flat, _ = pp.get_multicond_prompt_list([prompt])
        parts = [[flat[i], w] for i, w in res_indexes[0]]
        part_scheds = [sched(t, steps, hires) for t, _ in parts]
        whole = sched(prompt, steps, hires)
        conds = [pp.ScheduledPromptConditioning(e[0], torch.tensor([[float(i)]])) for i, e in enumerate(whole)]
        idx = [int(pp.reconstruct_cond_batch([conds], k)[0, 0, 0]) for k in range(0, (hires or steps) + 2)]
        return {"and": parts, "parts": part_scheds, "whole": whole, "idx": idx}
    except Exception as e:  # A1111 fails the job: fmimage must refuse it
        return {"error": type(e).__name__}


def corpus():
    rng = random.Random(19)
    cases = [(p, s, 0) for p, s in WIKI]
    cases += [(p, 10, 0) for p in DOCTESTS]
    cases += [("a [b:.5] c", 10, 10), ("a [b:1.5] c", 10, 10)]
    for p in HAND:
        cases.append((p, 10, 0))
        cases.append((p, 20, 0))
    for p in ["a [b:1.5] c", "a [b:15] c", "a [b:5] c", "[a:b:0.5] [c:d:1.25]", "[a|b] [c:d:12]", "[a:b:2.0]"]:
        cases.append((p, 10, 5))
    steps_choices = [1, 2, 3, 5, 10, 20, 30]
    for _ in range(260):
        p = gen_seq(rng, 0)
        cases.append((p, rng.choice(steps_choices), 0))
    for _ in range(120):
        p = mutate(rng, gen_seq(rng, 0))
        cases.append((p, rng.choice(steps_choices), 0 if rng.random() < 0.8 else rng.choice([3, 10])))
    seen, out = set(), []
    for c in cases:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


SEEDS = 8


def main():
    cases = corpus()
    if os.environ.get("PSCHED_WORKER"):
        json.dump([result(p, s, h) for p, s, h in cases], sys.stdout)
        return
    runs = []
    for seed in range(SEEDS):
        env = dict(os.environ, PSCHED_WORKER="1", PYTHONHASHSEED=str(seed))
        runs.append(json.loads(subprocess.run([sys.executable, __file__], env=env, check=True,
                                              stdout=subprocess.PIPE).stdout))
    print("# prompt (JSON)\tsteps\thires_steps (0 none)\tA1111 prompt_parser result (JSON): and/parts/whole/idx or error. "
          "Made by tools/ref/prompt_schedules.py; see tests/data/README.md#prompt-schedules")
    for k, (p, s, h) in enumerate(cases):
        distinct = []
        for r in runs:
            if r[k] not in distinct:
                distinct.append(r[k])
        res = distinct[0] if len(distinct) == 1 else {"any": distinct}
        print(json.dumps(p, ensure_ascii=True) + "\t" + str(s) + "\t" + str(h) + "\t" +
              json.dumps(res, ensure_ascii=True, separators=(",", ":")))


if __name__ == "__main__":
    main()
