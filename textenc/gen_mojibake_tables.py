#!/usr/bin/env python3
"""Writes textenc/mojibake_tables.c: the character classes of ftfy 6.3.1's
mojibake heuristic (ftfy/badness.py MOJIBAKE_CATEGORIES, ftfy/chardata.py
UTF8_CLUES) and the single-byte codecs of chardata.CHARMAP_ENCODINGS (ftfy's
"sloppy" variants decode unassigned bytes as Latin-1 and byte 0x1A as U+FFFD).

Dev-time only; the output is committed. Usage, from the repository root:
  python3 textenc/gen_mojibake_tables.py DIR > textenc/mojibake_tables.c
where DIR/chardata.py and DIR/badness.py are ftfy's files at commit
74dd0452b48286a3770013b3a02755313bd5575e (rspeer/python-ftfy; both import
only the standard library)."""
import codecs
import importlib.util
import re
import re._constants as K
import re._parser as P
import sys


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CLUES = ["utf8_first_of_2", "utf8_first_of_3", "utf8_first_of_4", "utf8_continuation",
         "utf8_continuation_strict"]


def class_table(cats, names):
    regs = [re.compile("[" + cats[n] + "]") for n in names]
    rows = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        mask = 0
        for bit, r in enumerate(regs):
            if r.match(ch):
                mask |= 1 << bit
        if mask:
            rows.append((cp, mask))
    return rows


def sloppy_table(encoding):
    chars = list(bytes(range(256)).decode("latin-1"))
    for i, c in enumerate(bytes(range(256)).decode(encoding, errors="replace")):
        if c != "\ufffd":
            chars[i] = c
    chars[0x1A] = "\ufffd"
    return [ord(c) for c in chars]


def register_sloppy_codecs():
    """chardata.py needs ftfy's sloppy codecs at import time."""
    def search(name):
        if not name.startswith("sloppy_"):
            return None
        base = name[len("sloppy_"):].replace("_", "-")
        table = "".join(chr(c) for c in sloppy_table(base))
        enc = codecs.charmap_build(table)
        return codecs.CodecInfo(name="sloppy-" + base,
                                encode=lambda s, e="strict": codecs.charmap_encode(s, e, enc),
                                decode=lambda b, e="strict": codecs.charmap_decode(b, e, table))
    codecs.register(search)


def in_items_contain(items, cp):
    for op, av in items:
        if op == K.LITERAL and av == cp:
            return True
        if op == K.RANGE and av[0] <= cp <= av[1]:
            return True
    return False


def ranges_of(items):
    """Code points (all in the BMP for these classes) of a positive set."""
    cps = [cp for cp in range(0x10000) if in_items_contain(items, cp)]
    assert not any(op == K.RANGE and av[1] > 0xFFFF for op, av in items)
    ranges = []
    for cp in cps:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return ranges


def element(op, av):
    """(kind, set items) of one single-character element of BADNESS_RE."""
    if op == K.LITERAL:
        return "BE_SET", [(K.LITERAL, av)]
    if op == K.ANY:
        return "BE_ANY", None
    if op == K.AT:
        assert av == K.AT_BEGINNING
        return "BE_START", None
    assert op == K.IN, op
    if av == [(K.CATEGORY, K.CATEGORY_SPACE)]:
        return "BE_SPACE", None
    if av == [(K.CATEGORY, K.CATEGORY_WORD)]:
        return "BE_WORD", None
    if av[0][0] == K.NEGATE:
        return "BE_NOT_SET", av[1:]
    assert all(o in (K.LITERAL, K.RANGE) for o, _ in av), av
    return "BE_SET", av


def write_badness(out, regex):
    """BADNESS_RE is one alternation of fixed sequences of single-character
    elements (one of them optional): emitted as data for a small matcher."""
    tree = P.parse(regex.pattern, regex.flags)
    assert len(tree.data) == 1 and tree.data[0][0] == K.BRANCH
    branches = tree.data[0][1][1]
    sets = []
    elems = []
    for bi, seq in enumerate(branches):
        row = []
        for op, av in seq.data:
            optional = 0
            if op == K.MAX_REPEAT:
                lo, hi, sub = av
                assert (lo, hi) == (0, 1) and len(sub.data) == 1
                optional = 1
                op, av = sub.data[0]
            kind, items = element(op, av)
            set_name, n = "NULL", 0
            if items is not None:
                rng = ranges_of(items)
                set_name = "bad_set_%d" % len(sets)
                sets.append((set_name, rng))
                n = len(rng)
            row.append("{%s, %d, %d, %s}" % (kind, optional, n, set_name))
        elems.append(row)
    for name, rng in sets:
        out.write("static const te_cp_range %s[] = {" % name)
        out.write(", ".join("{0x%x, 0x%x}" % (a, b) for a, b in rng))
        out.write("};\n")
    out.write("\n")
    for bi, row in enumerate(elems):
        out.write("static const te_bad_elem bad_branch_%d[] = {%s};\n" % (bi, ", ".join(row)))
    out.write("\n/* the alternatives of ftfy.badness.BADNESS_RE, in order */\n")
    out.write("const te_bad_branch te_badness_branches[] = {\n")
    for bi, row in enumerate(elems):
        out.write("    {bad_branch_%d, %d},\n" % (bi, len(row)))
    out.write("};\nconst int te_badness_branches_count = %d;\n\n" % len(elems))


def main():
    d = sys.argv[1]
    register_sloppy_codecs()
    chardata = load(d + "/chardata.py", "chardata")
    badness = load(d + "/badness.py", "badness")
    out = sys.stdout
    out.write("/* Generated by textenc/gen_mojibake_tables.py from ftfy 6.3.1 (commit\n"
              " * 74dd0452b48286a3770013b3a02755313bd5575e) and Python %s codecs; do not\n"
              " * edit. */\n" % sys.version.split()[0])
    out.write('#include "textenc/mojibake_tables.h"\n\n')
    write_badness(out, badness.BADNESS_RE)
    for var, cats, names in (("te_utf8_clue_classes", chardata.UTF8_CLUES, CLUES),):
        rows = class_table(cats, names)
        out.write("const te_char_class %s[] = {\n" % var)
        for cp, m in rows:
            out.write("    {0x%04x, 0x%04x},\n" % (cp, m))
        out.write("};\nconst int %s_count = %d;\n\n" % (var, len(rows)))
    out.write("const te_charmap te_charmaps[FM_N_CHARMAPS] = {\n")
    for enc in chardata.CHARMAP_ENCODINGS:
        if enc.startswith("sloppy-"):
            table = sloppy_table(enc[len("sloppy-"):])
        else:
            table = [ord(c) for c in bytes(range(256)).decode(enc)]
        out.write('    {"%s", %d, {\n' % (enc, enc.startswith("sloppy-")))
        for i in range(0, 256, 8):
            out.write("        " + " ".join("0x%04x," % c for c in table[i:i + 8]) + "\n")
        # what str.encode(enc) maps back to a byte besides ASCII: bytes
        # 0x80..0xFF and 0x1A (chardata.possible_encoding), sorted by code point
        rev = sorted((table[b], b) for b in list(range(0x80, 0x100)) + [0x1A])
        assert len(set(cp for cp, _ in rev)) == len(rev), enc
        for cp, b in rev:
            assert chr(cp).encode(enc) == bytes([b]), (enc, cp, b)
        out.write("    }, {\n")
        for i in range(0, len(rev), 6):
            out.write("        " + " ".join("{0x%04x, 0x%02x}," % e for e in rev[i:i + 6]) + "\n")
        out.write("    }},\n")
    out.write("};\n\n")
    strict = []
    for b in range(256):
        try:
            strict.append(ord(bytes([b]).decode("windows-1252")))
        except UnicodeDecodeError:
            strict.append(0xFFFFFFFF)
    out.write("/* windows-1252 as Python decodes it strictly; 0xFFFFFFFF: undefined */\n")
    out.write("const uint32_t te_windows_1252[256] = {\n")
    for i in range(0, 256, 8):
        out.write("    " + " ".join("0x%04x," % c for c in strict[i:i + 8]) + "\n")
    out.write("};\n")


main()
