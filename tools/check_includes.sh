#!/bin/sh
# check_includes.sh [--graph] [ROOT]: the layer rule of docs/ARCHITECTURE.md
# over every #include "..." of the library and the CLI.
#
#   include/ third_party/  <  core  <  kernels  <  weights
#     <  {textenc, unet, vae, samplers, upscale}  <  diffusion  <  server  <  cli
#
# A file may include its own module and any module of a lower layer; the
# four model parts are peers and do not include each other. Fails (exit 1)
# naming each include that runs upward or sideways, each include it cannot
# resolve, and any include cycle between files. --graph prints the module
# graph instead ("from -> to (count)"). POSIX sh, find, sed, sort, tsort.

graph=0
if [ "$1" = "--graph" ]; then graph=1; shift; fi
root=${1:-.}
cd "$root" || exit 2

MODULES="include third_party core kernels weights textenc unet vae samplers upscale diffusion server cli"

layer() {
    case $1 in
    include | third_party) echo 0 ;;
    core) echo 1 ;;
    kernels) echo 2 ;;
    weights) echo 3 ;;
    textenc | unet | vae | samplers | upscale) echo 4 ;;
    diffusion) echo 5 ;;
    server) echo 6 ;;
    cli) echo 7 ;;
    *) echo 9 ;; # tests/, tools/: above everything, never included by the library
    esac
}

tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
status=0

# Every quoted include as "FILE TARGET", resolved as the compiler does
# (the including file's directory, then -Iinclude, then -I.).
for m in $MODULES; do [ -d "$m" ] && find "$m" -name '*.[ch]'; done | sort >"$tmp/files"
while read -r f; do
    dir=${f%/*}
    sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f" >"$tmp/incs"
    while read -r inc; do
        if [ -f "$dir/$inc" ]; then t="$dir/$inc"
        elif [ -f "include/$inc" ]; then t="include/$inc"
        elif [ -f "$inc" ]; then t=$inc
        else
            echo "$f: #include \"$inc\": no such file" >&2
            status=1
            continue
        fi
        t=$(echo "$t" | sed -e ':a' -e 's|[^/]*/\.\./||' -e 'ta' -e 's|/\./|/|g')
        echo "$f $t" >>"$tmp/edges"
    done <"$tmp/incs"
done <"$tmp/files"
touch "$tmp/edges"

if [ "$graph" = 1 ]; then
    while read -r f t; do
        [ "${f%%/*}" != "${t%%/*}" ] && echo "${f%%/*} -> ${t%%/*}"
    done <"$tmp/edges" | sort | uniq -c | awk '{ print $2, $3, $4, "(" $1 ")" }'
    exit 0
fi

while read -r f t; do
    from=${f%%/*}
    to=${t%%/*}
    [ "$from" = "$to" ] && continue
    lf=$(layer "$from")
    lt=$(layer "$to")
    if [ "$lt" -gt "$lf" ]; then
        echo "$f: includes $t: $to is a higher layer than $from" >&2
        status=1
    elif [ "$lt" = "$lf" ]; then
        echo "$f: includes $t: $from and $to are peers and must not include each other" >&2
        status=1
    fi
done <"$tmp/edges"

if ! tsort "$tmp/edges" >/dev/null 2>"$tmp/cycle"; then
    echo "include cycle:" >&2
    sed 's/^tsort: /  /' "$tmp/cycle" >&2
    status=1
fi

[ "$status" = 0 ] && echo "includes follow the layers: $(wc -l <"$tmp/files") files, $(wc -l <"$tmp/edges") includes"
exit $status
