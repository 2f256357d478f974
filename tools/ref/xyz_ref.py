#!/usr/bin/python3
"""Reference X/Y/Z axis values: runs process_axis, the nested function of
A1111's scripts/xyz_grid.py Script.run that turns an axis' text into its
values (csv split, ranges `1-4`, `1-10 (+2)`, `1-10 [5]`, floats), on a
corpus, and writes tests/data/xyz_axes.tsv.

Upstream: AUTOMATIC1111/stable-diffusion-webui scripts/xyz_grid.py (the
stored copy of commit 02d5a43c4b3302505dc58d0c8e2f3a40e3e766b8). The script
reads that file (A1111_XYZ=path/to/xyz_grid.py), takes its module-level
imports, regexes and helpers and the source of process_axis out of it with
ast, and runs them as they are (numpy 1.24, /usr/bin/python3). The rest of
the file (gradio, modules.*) is not imported.

Re-run:  A1111_XYZ=/dir/scripts/xyz_grid.py /usr/bin/python3 tools/ref/xyz_ref.py
Each line: TYPE (int, float, str) <TAB> the axis text JSON <TAB> the values
JSON (a list), or "error" (process_axis raised), or "nonfinite" (a value is
inf or nan, which fmimage refuses).
"""
import ast
import json
import math
import os
import pathlib
import random
import textwrap

SRC = pathlib.Path(os.environ.get("A1111_XYZ", "/tmp/a1111x/xyz_grid.py"))
OUT = pathlib.Path(__file__).resolve().parents[2] / "tests/data/xyz_axes.tsv"


def load_process_axis():
    tree = ast.parse(SRC.read_text())
    keep = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom) and node.module in ("itertools", "io") or \
               isinstance(node, ast.Import) and names[0] in ("csv", "re", "numpy"):
                keep.append(node)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.startswith("re_range")
                                                  for t in node.targets):
            keep.append(node)
        elif isinstance(node, ast.FunctionDef) and node.name in ("csv_string_to_list_strip", "str_permutations"):
            keep.append(node)
    env = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(SRC), "exec"), env)
    script = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Script")
    run = next(n for n in script.body if isinstance(n, ast.FunctionDef) and n.name == "run")
    pa = next(n for n in ast.walk(run) if isinstance(n, ast.FunctionDef) and n.name == "process_axis")
    # process_axis closes over run's csv_mode, raw_mode and p: "Use text
    # inputs instead of dropdowns" on, raw mode off, no p needed.
    maker = "def make(csv_mode, raw_mode, p):\n" + textwrap.indent(ast.unparse(pa), "    ") + \
            "\n    return process_axis\n"
    exec(compile(maker, str(SRC), "exec"), env)
    return env["make"](True, False, None), env["str_permutations"]


class Opt:
    def __init__(self, type):
        self.label, self.type, self.choices, self.prepare, self.confirm = "X", type, None, None, None


HAND = {
    "int": ["1-4", "1-10 (+2)", "1-10 [5]", "1-4, 8, 10-12", "5,7,9", " 3 ", "-5--1", "10-1", "10-1 (-3)",
            "1-10 (+0)", "1-10 (-1)", "1 - 4", "1 -4", "+1-+4", "1-4 ( +2)", "1-4 (+2 )", "1-4(+2)", "1-10 [0]",
            "1-10 [1]", "1-10 [3]", "10-1 [4]", "0-0 [3]", "1-2 [7]", "-3-3 [4]", "1_000", "1__0", "1.5", "abc",
            "", ",", "1,,2", "\"1-4\",\"5\"", "\"1,2\"", "1\n2-3", "1-4 [2.5]", "1-10 (2)", "- 5-3", "+ 5", "1-2-3",
            "4294967295", "-1", "1e3", "0x10", " 1 - 3 ( +1 ) ", "1-10 [ 5 ]", "1-3 [5]x"],
    "float": ["1-4", "5-9 (+2)", "1-2 (+0.25)", "0.5-1.5 [5]", "7,8.5,9", "1.5-3.5", "1.-2.", "1-2 (+.5)",
              "1x5-3", "1.5-2.5 (+0.1)", "0-1 (+0.1)", "2-1 (-0.25)", "1-2 (-0.5)", "1-2 (+0)", "0-1 [11]",
              "0-1 [0]", "0-1 [1]", "3-3 [4]", "1e1", "1_0.5", "inf", "nan", "-0", "+.5", ".5", "5.", "1-2 [2.5]",
              "1-2 [2.0]", "1 - 2", "1-2-3", "abc", "", "7, 8.5 ,9", "\"7\", \"8\"", "0.1-0.3 (+0.1)", "1e309",
              "1-4 (+1e1)", "2.5-7.5 [3]", "-1.5--0.5 (+0.5)"],
    "str": ["Euler a,DPM++ 2M", "Euler a, DPM++ 2M Karras", "\"a, b\",c", "x\ny", " a , b ", "", "a,,b",
            "\"q\"\"uote\"", "\"a\"b,c", "dog,cat,fox"],
}


def corpus():
    rnd = random.Random(19)
    cases = [(t, s) for t, v in HAND.items() for s in v]
    nums = ["1", "2", "5", "10", "0", "3", "20", "100", "-2", "+3", "1.5", "0.25", "2.", ".5", "7.5"]
    for _ in range(300):
        t = rnd.choice(["int", "float"])
        fields = []
        for _ in range(rnd.randint(1, 3)):
            a, b = rnd.choice(nums), rnd.choice(nums)
            form = rnd.random()
            if form < 0.3:
                fields.append(a)
            elif form < 0.55:
                fields.append(f"{a}{rnd.choice(['-', ' - ', '- '])}{b}")
            elif form < 0.8:
                fields.append(f"{a}-{b} ({rnd.choice(['+', '-'])}{rnd.choice(nums).lstrip('+-')})")
            else:
                fields.append(f"{a}-{b} [{rnd.choice(['1', '2', '3', '4', '5', '0', '2.5'])}]")
        cases.append((t, ", ".join(fields)))
    return cases


def main():
    process_axis, _ = load_process_axis()
    n = 0
    with open(OUT, "w", encoding="utf-8") as f:
        for t, text in corpus():
            typ = {"int": int, "float": float, "str": str}[t]
            try:
                got = process_axis(Opt(typ), text, None)
                if len(got) > 10000:
                    continue
                if any(isinstance(x, float) and not math.isfinite(x) for x in got):
                    got = "nonfinite"
            except Exception:  # ValueError (int(), float(), range step 0), ZeroDivisionError
                got = "error"
            f.write(f"{t}\t{json.dumps(text, ensure_ascii=False)}\t{json.dumps(got, ensure_ascii=False)}\n")
            n += 1
    print(f"{OUT}: {n} axes")


if __name__ == "__main__":
    main()
