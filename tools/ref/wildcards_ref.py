#!/usr/bin/env python3
"""Reference wildcards: runs dynamicprompts' CombinatorialPromptGenerator
(the parser and sampler the sd-dynamic-prompts extension uses) on a corpus
of templates against the wildcard files in tests/data/wildcards/, and writes
tests/data/wildcards.tsv.

Upstream: PyPI dynamicprompts 0.31.0 (github.com/adieyal/dynamicprompts),
pip install dynamicprompts==0.31.0 (reference making only).

Re-run:  python3 tools/ref/wildcards_ref.py
Each line: template JSON <TAB> the expansions JSON (a list, in the
generator's order), or the string "error" when dynamicprompts refuses the
template (a pyparsing ParseException).
"""
import json
import logging
import pathlib
import random

import pyparsing

from dynamicprompts.generators import CombinatorialPromptGenerator
from dynamicprompts.wildcards import WildcardManager

logging.disable(logging.WARNING)
ROOT = pathlib.Path(__file__).resolve().parents[2]
WC = ROOT / "tests/data/wildcards"
OUT = ROOT / "tests/data/wildcards.tsv"
MAX = 300  # templates with more expansions are left out (the file stays small)

HAND = [
    "a {red|green|blue} fox",
    "a {b|c} {d|e}",
    "{ a | b }",
    "{a | b | c}",
    "{2$$a|b|c}",
    "{2$$ and $$a|b|c}",
    "{1-2$$a|b}",
    "{-2$$a|b|c}",
    "{2-$$a|b|c}",
    "{2-1$$a|b|c}",
    "{3$$a|b}",
    "{0$$a|b}",
    "{a|a|b}",
    "{2$$a|a|b}",
    "{a|{b|c}}",
    "{2$$a|{b|c}}",
    "{0.5::a|b}",
    "{1.5::a|.5::b|2::c| 3 ::d}",
    "{-1::a|b}",
    "{+1.5::a|b}",
    "{1e2::a|b}",
    "{1::2::a|b}",
    "{}",
    "{a|}",
    "{|a}",
    "{a|b|}",
    "x}",
    "a {b|c}d",
    "{a|b}{c|d}",
    "{2$$a|b} {1-2$$c|d}",
    "{2$$ , $$a|b}",
    "{2$$a$$b|c}",
    "{2$$ $$a|b}",
    "{2$$a |b }",
    "{2$$|$$a|b}",
    "{2$$\t$$a|b}",
    "{\ta|b}",
    "tab\there {x|y}",
    "{ 2$$a|b}",
    "x # comment {a|b}",
    "a # c\nb {x|y}",
    "{a#c\n|b}",
    "{a\n|\n b}",
    "x\ny {a|b}",
    "a /* c */ b {x|y}",
    "__colors__",
    "__colors__ {a|b}",
    "x __colors__",
    "{a|__colors__}",
    "{__colors__|red}",
    "{__colors__}",
    "{2$$__colors__}",
    "{2$$ / $$__colors/warm__}",
    "__colors/warm__",
    "__colors/cool__ and __colors/warm__",
    "__animals__",
    "{2$$__animals__}",
    "__nested/a__",
    "__crlf__",
    "__tabs__",
    "__weather__",
    "{__weather__|snowy}",
    "a photo of a __animals__, {day|night}, {1-2$$ and $$__colors/warm__|__colors/cool__}",
    "{{a|b}|{c|d}}",
    "{{a|b} {c|d}|e}",
    "{3$$a|b|c}",
    "{2$$x|y|z|w}",
    "{1-3$$a|b|c}",
    "日本 {猫|犬} é",
    "{2$$日本|é|ß}",
    # refused by dynamicprompts
    "{a",
    "a}b{",
    "{a|b",
    "50% off {a|b}",
    "cost $5 {a|b}",
    "a__b",
    "{ 2 $$a|b}",
    "{2 $$a|b}",
    "{a|b}}{",
]

WORDS = ["cat", "dog", "red", "a b", " sp", "x ", "日本", "é", "", "1", "2.5", "fox,", "(w:1.1)", "[p:q:5]",
         "<lora:x:0.5>", "AND", "BREAK", "}", "|"]


def gen_template(rnd, depth=0):
    """A random template from the syntax fmimage supports."""
    parts = []
    for _ in range(rnd.randint(1, 3)):
        r = rnd.random()
        if r < 0.35 and depth < 3:
            n = rnd.randint(1, 4)
            opts = []
            for _ in range(n):
                o = gen_template(rnd, depth + 1) if rnd.random() < 0.3 else rnd.choice(WORDS[:16])
                if rnd.random() < 0.15:
                    o = rnd.choice(["0.5::", "2::", "1.::", ".25::", " "]) + o
                opts.append(o)
            bound = ""
            if rnd.random() < 0.4:
                bound = rnd.choice(["1", "2", "3", "0", "1-2", "-2", "2-", "2-3", "3-1"]) + "$$"
                if rnd.random() < 0.4:
                    bound += rnd.choice([" and ", ", ", "|", " ", "-", "+"]) + "$$"
            parts.append("{" + bound + "|".join(opts) + "}")
        elif r < 0.5:
            parts.append(rnd.choice(["__colors__", "__colors/warm__", "__animals__", "__nested/b__", "__weather__",
                                     "{2$$__colors/cool__}"]))
        elif r < 0.55:
            parts.append(" # note\n")
        else:
            parts.append(rnd.choice(WORDS[:16]) + rnd.choice([" ", ", ", ""]))
    return "".join(parts)


# Variables (${name=value}, =! immediate, ?= keep, ${name}, ${name:default})
# and the wrap command (%{wrapper$$inner}), with the files that use them
# (wrappers.txt, pet.txt, setter.txt).
VARS = [
    "${a=x}${a}",
    "${a=x} ${a} and ${a}",
    "${a={x|y}} ${a} ${a}",
    "${a=!{x|y}} ${a} ${a}",
    "${ a = {x|y} } [${a}]",
    "${a=!{2$$x|y|z}} ${a}",
    "${a={red|blue}}${b=!{big|small}} ${b} ${a} ${b}",
    "${a} ${a=x}",
    "${a}",
    "${a:dflt}",
    "${a: dflt }",
    "${ a :dflt}",
    "${a:{x|y}} ${a}",
    "${a:}",
    "${a=}${a}",
    "${a=!}[${a}]",
    "${a=${a}}${a}",
    "${a=${b}}${b=${a}} ${a}",
    "${a=!${a}} ${a}",
    "${a=x}",
    "${a=x}${b=y}",
    "${a=x}${a=y} ${a}",
    "${a=x}${a?=y} ${a}",
    "${a=!{x|y}}${b=${a}-${a}} ${b}",
    "${a={x|y}}${b=!${a}} ${b} ${b}",
    "${a=x}{${a}|z}",
    "{${a=x}|z}",
    "{a|${b:q}}",
    "${a=1}${b=2} {${a}|${b}} ${a}${b}",
    "${a=x|y}",
    "${a=x",
    "${=x}",
    "${1a=x}",
    "${a-b_c=v}${a-b_c}",
    "${A9=v}${A9}",
    "${a=x}${a",
    "${a?x}",
    "${a==x}${a}",
    "${a=!!x}${a}",
    "${a=x}__pet__",
    "__pet__",
    "${kind=fox}__pet__",
    "${kind={fox|owl}} __pet__",
    "${kind=!{fox|owl}} __pet__",
    "{2$$__pet__}",
    "__setter__",
    "${tone=dark}__setter__ ${tone}",
    "${a=__colors/warm__} ${a}",
    "${a=!__colors/warm__} ${a}",
    "${a={1-2$$ and $$x|y}} ${a}",
    "%{a ... b$$x}",
    "%{... b$$x}",
    "%{a ...$$x}",
    "%{no marker$$x}",
    "%{ a ... b $$ x }",
    "%{a … b$$x}",
    "%{a …… b$$x}",
    "%{a ⋮ b ⋯ c$$x}",
    "%{a .... b ... c$$x}",
    "%{a .. b$$x}",
    "%{a ᠁ b$$x}",
    "%{a ︙ b$$x}",
    "%{a ⋰ b ⋱ c$$x}",
    "%{{a|b} ... {c|d}$$x}",
    "%{a ... b$${x|y}}",
    "%{{a|b} ...$${x|y}}",
    "%{__wrappers__$$a cat}",
    "%{__wrappers__$${a cat|a dog}}",
    "%{__wrappers__$$__animals__}",
    "%{a ... b$$%{c ... d$$x}}",
    "%{%{a ... b$$c ... d}$$x}",
    "%{$$x}",
    "%{a ... b$$}",
    "%{a ... b}",
    "%{a ... b$$x",
    "%{a|b ... $$x}",
    "%{a ... b$$x|y}",
    "%x",
    "%{a ... b$$x} and %{c...$$y}",
    "${w=a ... b}%{${w}$$x}",
    "${w={a ... b|c ...}}%{${w}$$x}",
    "${w=!{a ... b|c ...}}%{${w}$$x}",
    "${i={x|y}}%{a ... b$$${i}} ${i}",
    "{%{a ... b$$x}|y}",
    "{2$$%{a ... b$${x|y}}|z}",
    "${a=%{a ... b$$x}} ${a}",
    "${a=!%{a ... b$${x|y}}} ${a} ${a}",
    "%{a ... b$$${u}}",
    "%{a ... b$$${u:dflt}}",
    "${a=x} # ${b}\n${a}",
    "${a=x} ${a} # comment",
    "${a=1}${b=${a}${a}}${c=${b}${b}} ${c}",
    "${a={x|y}}${b=${a}${a}} ${b}",
    "${p={red|green}}{${p} fox|${p} owl}",
    "${a={x|y}}{2$$${a}|${a}|z}",
    "$a",
    "${ a }",
    "${a }",
    "${a:x}${a=y}",
    "${a:${b:${c:deep}}}",
    "${x=%{... wrapped$$${y:v}}}${y=w} ${x}",
]


def gen_var_template(rnd):
    """A random template using variables and wrap with the rest of the syntax."""
    names = ["a", "b", "kind"]
    parts = []
    for _ in range(rnd.randint(1, 3)):
        n = rnd.choice(names)
        val = rnd.choice(["x", "{x|y}", "{2$$x|y|z}", "__colors/warm__", "${b:q}", "%{p ... s$${m|n}}", " sp "])
        parts.append("${" + n + rnd.choice(["=", "=!", "?="]) + val + "}")
    for _ in range(rnd.randint(1, 3)):
        r = rnd.random()
        n = rnd.choice(names)
        if r < 0.4:
            parts.append("${" + n + "}" if rnd.random() < 0.6 else "${" + n + ":" + rnd.choice(["d", "{d|e}"]) + "}")
        elif r < 0.6:
            parts.append("%{" + rnd.choice(["w ... z", "{w|v} ...", "__wrappers__", "...!"]) + "$$" +
                         rnd.choice(["i", "${" + n + ":d}", "{i|j}"]) + "}")
        elif r < 0.75:
            parts.append("{" + rnd.choice(["${" + n + ":o}|p", "1$$q|${" + n + ":r}", "s|t"]) + "}")
        elif r < 0.85:
            parts.append("__pet__")
        else:
            parts.append(rnd.choice([" ", ", ", " and "]))
    rnd.shuffle(parts)
    return "".join(parts)


def main():
    gen = CombinatorialPromptGenerator(WildcardManager(WC))
    rnd = random.Random(19)
    templates = list(HAND)
    seen = set(templates)
    while len(templates) < 400:
        t = gen_template(rnd)
        if "{" in t and t not in seen:
            seen.add(t)
            templates.append(t)
    vrnd = random.Random(1919)
    for t in VARS:
        if t not in seen:
            seen.add(t)
            templates.append(t)
    while len(templates) < 400 + 220:
        t = gen_var_template(vrnd)
        if t not in seen:
            seen.add(t)
            templates.append(t)
    n = skipped = 0
    with open(OUT, "w", encoding="utf-8") as f:
        for t in templates:
            try:
                got = gen.generate(t, max_prompts=MAX + 1)
            except (pyparsing.ParseException, KeyError, RecursionError, NotImplementedError):
                # refused: bad syntax, a variable not set, a value that
                # uses itself, an assignment alone
                got = "error"
            except RuntimeError:
                # a sequence with a part that has no expansions ({3$$a|a}b)
                # ends in "generator raised StopIteration": an upstream bug,
                # left out (fmimage gives no prompts; the CLI refuses those)
                skipped += 1
                continue
            if got != "error" and len(got) > MAX:
                continue
            f.write(json.dumps(t, ensure_ascii=False) + "\t" + json.dumps(got, ensure_ascii=False) + "\n")
            n += 1
    print(f"{OUT}: {n} templates ({skipped} left out: RuntimeError upstream)")


if __name__ == "__main__":
    main()
