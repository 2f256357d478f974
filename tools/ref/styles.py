#!/usr/bin/python3
"""Reference styles: writes tests/data/styles.csv, then runs A1111's
modules/styles.py on it (StyleDatabase's csv reading, apply_styles_to_prompt
and apply_negative_styles_to_prompt, i.e. merge_prompts per style in order)
and writes tests/data/styles_ref.tsv.

Upstream: AUTOMATIC1111/stable-diffusion-webui modules/styles.py (the stored
copy of commit 04b4508a66de58c9f3a422fdcad4dd2ec3ad39ce; merge_prompts and
apply_styles_to_prompt are unchanged up to v1.10, whose loader also skips
rows whose name starts with '#': styles.csv has none, that rule is read,
not run).

Re-run:  A1111_MODULES=/dir/with/styles.py /usr/bin/python3 tools/ref/styles.py
Each line of styles_ref.tsv: [style names] JSON <TAB> prompt JSON <TAB>
negative JSON <TAB> [styled prompt, styled negative] JSON.
"""
import json
import os
import sys

sys.path.insert(0, os.environ.get("A1111_MODULES", "/tmp/psched/a1111"))
import styles  # noqa: E402

CSV = ('\ufeffname,prompt,negative_prompt\n'
       'photo,"a photo of {prompt}, 35mm","blurry, lowres"\n'
       'cinematic, cinematic lighting ,  "bad anatomy"\n'
       'quoted,"he said ""hi"", {prompt}!",\n'
       'multi,"line one\nline two",neg\n'
       'twice,{prompt} and {prompt},{prompt} (worst)\n'
       'empty,,\n'
       'spaces,   ,   \n'
       '\n'
       'after,"x"y,z\n'
       'unicode,"日本 {prompt} é","ß"\n'
       'short,only prompt\n'  # no negative column: A1111 gets None there and fails; fmimage takes ""
       'cinematic,"film grain, {prompt}","overexposed"\n'
       'sched,"[{prompt}:oil painting:0.5]","[ugly|deformed]"\n'
       'and,"{prompt} AND a castle :0.5",\n')

NAMES = [[], ["photo"], ["cinematic"], ["photo", "cinematic"], ["cinematic", "photo"], ["quoted"], ["multi"],
         ["twice"], ["empty"], ["spaces"], ["after"], ["unicode"], ["sched"], ["and"],
         ["photo", "twice", "quoted"], ["empty", "photo"], ["twice", "twice"]]
PROMPTS = [("a red fox", ""), ("  padded  ", "  neg  "), ("", ""), ("x, y", "blurry"), ("{prompt}", "n")]


def main():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data")
    path = os.path.join(here, "styles.csv")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(CSV)
    db = styles.StyleDatabase(path)
    with open(os.path.join(here, "styles_ref.tsv"), "w", encoding="utf-8") as out:
        out.write("# style names\tprompt\tnegative\t[styled prompt, styled negative] (JSON); "
                  "A1111 modules/styles.py on styles.csv, tools/ref/styles.py\n")
        for names in NAMES:
            for p, n in PROMPTS:
                res = [db.apply_styles_to_prompt(p, names), db.apply_negative_styles_to_prompt(n, names)]
                out.write("\t".join(json.dumps(x, ensure_ascii=True) for x in (names, p, n, res)) + "\n")


if __name__ == "__main__":
    main()
