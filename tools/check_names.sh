#!/bin/sh
# check_names.sh [BUILD]: the naming rule of docs/ARCHITECTURE.md over the
# global symbols of BUILD/libfmimage.a and BUILD/libfmserver.a (server/,
# linked into the program only; default build/).
#
#   - a global fm_ symbol is declared in include/fmimage.h (the public API);
#   - every other global symbol carries a module prefix: core_ (core), kn_
#     and gemm_ (kernels), wt_ (weights), te_ (textenc), un_ (unet), vae_
#     (vae), smp_ (samplers), up_ (upscale), df_ (diffusion), srv_ (server),
#     or stbi_ (third_party);
#   - a global that is not public is used by another object: the library's
#     other objects, the CLI's, the tests', the tools' (BUILD/**/*.o); one
#     used only in its own file should be static (build/san and build/fuzz,
#     other builds, are not looked at).
#
# Fails (exit 1) naming each offending symbol and its object. Run from the
# repository root. POSIX sh, nm, sed, sort, awk.

build=${1:-build}
lib=$build/libfmimage.a
[ -f "$lib" ] || { echo "check_names.sh: $lib: no such file (build first)" >&2; exit 2; }
[ -f include/fmimage.h ] || { echo "check_names.sh: run from the repository root" >&2; exit 2; }
PREFIXES="core_ kn_ gemm_ wt_ te_ un_ vae_ smp_ up_ df_ srv_ stbi_"
srvlib=$build/libfmserver.a
[ -f "$srvlib" ] || srvlib=

tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
status=0

# The public names: identifiers of include/fmimage.h outside comments.
sed -e 's://.*$::' include/fmimage.h | awk '
    { s = s $0 "\n" }
    END { gsub(/\/\*([^*]|\*+[^*\/])*\*+\//, "", s); printf "%s", s }' |
    grep -o 'fm_[A-Za-z0-9_]*' | sort -u >"$tmp/public"

# "OBJECT SYMBOL" for each global the archive defines.
nm -A -g --defined-only "$lib" $srvlib 2>/dev/null |
    awk '{ n = split($1, p, ":"); obj = p[n-1]; if (NF >= 3) print obj, $NF }' |
    sort -u >"$tmp/defined"

# Every symbol some object leaves undefined (uses), with its object.
find "$build" \( -path "$build/san" -o -path "$build/fuzz" \) -prune -o -name '*.o' -print | sort | while read -r o; do
    nm -u "$o" 2>/dev/null | awk -v o="${o##*/}" '{ print o, $NF }'
done | sed 's/ __real_/ /; s/ __wrap_/ /' | sort -u >"$tmp/used"

while read -r obj sym; do
    case $sym in
    __* | *.*) continue ;; # the compiler's own (ASan's __odr_asan.NAME)
    fm_*)
        if ! grep -qx "$sym" "$tmp/public"; then
            echo "$obj: $sym: fm_ is the public API, and include/fmimage.h does not declare it" >&2
            status=1
        fi
        continue ;;
    esac
    ok=0
    for p in $PREFIXES; do case $sym in "$p"*) ok=1 ;; esac; done
    if [ $ok = 0 ]; then
        echo "$obj: $sym: no module prefix ($PREFIXES)" >&2
        status=1
    fi
    case $sym in stbi_*) continue ;; esac
    if ! awk -v s="$sym" -v o="$obj" '$2 == s && $1 != o { f = 1 } END { exit !f }' "$tmp/used"; then
        echo "$obj: $sym: used only in its own file: make it static" >&2
        status=1
    fi
done <"$tmp/defined"

if [ $status = 0 ]; then
    echo "check_names.sh: $(wc -l <"$tmp/defined") global symbols, all public or module-prefixed"
fi
exit $status
