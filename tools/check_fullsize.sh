#!/bin/sh
# README's "Editing and upscaling" commands on random full-size checkpoints
# (issue 18): inpaint, outpaint, hires fix and a 4x upscale, 2 steps each.
# Prints one row per run: name, wall seconds, peak RSS (MB), PNG size, ok/FAIL.
# Too slow for make test (minutes per SDXL run); `make check-fullsize` runs it.
#
#   tools/check_fullsize.sh [RUN...]     RUN: sd1 sdxl upscale (default all three),
#                                        sd1-lora (issue 16: a rank-8 LoRA's merged tensors vs
#                                        A1111's merge, tools/ref/lora_fullsize_ref.py; needs A1111_LORA)
#
# Inputs (made by make bench / build/tools/mkckpt when absent):
#   $BENCH/sd1-f16.safetensors   random SD 1.5 (tests/data/layouts/sd1.tsv)
#   $BENCH/sdxl-f16.safetensors  random SDXL base (tests/data/layouts/sdxl.tsv)
#   $BENCH/realesrgan-x4plus-f16.safetensors  random RRDBNet x4
# SIZE_sd1 / SIZE_sdxl (default 512 / 1024): the side of base, inpaint, outpaint;
# the hires fix is 512 -> 1024 (--hires-scale 2) on both.
set -u
FM=${FM:-build/fmimage}
MKCKPT=${MKCKPT:-build/tools/mkckpt}
MKLORA=${MKLORA:-build/tools/mklora}
LORAMERGE=${LORAMERGE:-build/tools/loramerge}
BENCH=${BENCH:-${XDG_CACHE_HOME:-$HOME/.cache}/fmimage/bench}
OUT=${OUT:-build/fullsize}
mkdir -p "$OUT" "$BENCH"
fail=0

need() { # need FILE LAYOUT
    [ -f "$1" ] || "$MKCKPT" "tests/data/layouts/$2" "$1" --seed 1 || exit 1
}

png_size() { # WxH of a PNG, from its IHDR
    od -An -tu1 -j16 -N8 "$1" 2>/dev/null |
        awk '{ printf "%dx%d", (($1*256+$2)*256+$3)*256+$4, (($5*256+$6)*256+$7)*256+$8 }'
}

run() { # run NAME WANT_SIZE OUT.png fmimage-args...
    name=$1 want=$2 png=$3
    shift 3
    rm -f "$png"
    /usr/bin/time -v -o "$OUT/$name.time" "$FM" "$@" -o "$png" >"$OUT/$name.log" 2>&1
    rc=$?
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$OUT/$name.time")
    rss=$(awk -F': ' '/Maximum resident set size/ { printf "%d", $2 / 1024 }' "$OUT/$name.time")
    got=$(png_size "$png")
    ok=ok
    [ $rc -eq 0 ] && [ "$got" = "$want" ] || { ok="FAIL (exit $rc)"; fail=1; }
    printf '%-14s %8ss %7s MB  %-10s %s\n' "$name" "$wall" "$rss" "${got:-none}" "$ok"
}

mask() { # mask OUT.png SIDE: white left half
    /usr/bin/python3 -c "from PIL import Image; s=$2; im=Image.new('L',(s,s),0); im.paste(255,(0,0,s//2,s)); im.save('$1')"
}

family() {
    f=$1 s=$2 ckpt=$3
    m="-m $ckpt --steps 2 -W $s -H $s --seed 1"
    d=$OUT/$f
    mask "$d-mask.png" "$s"
    run "$f.base" "${s}x$s" "$d-base.png" "a red fox" $m
    run "$f.inpaint" "${s}x$s" "$d-bird.png" "a blue bird" $m -i "$d-base.png" --mask "$d-mask.png"
    run "$f.outpaint" "$((s + 128))x$s" "$d-wide.png" "a wide meadow" $m -i "$d-base.png" --outpaint 64,0,64,0
    run "$f.hires" 1024x1024 "$d-hires.png" "a fox" -m "$ckpt" --steps 2 -W 512 -H 512 --seed 1 --hires-scale 2
}

families=${*:-sd1 sdxl upscale}
echo "# $(date -u +%FT%TZ) $(uptime | sed 's/.*load/load/'); $(lscpu | sed -n 's/^Model name: *//p')"
for f in $families; do
    case $f in
    sd1) need "$BENCH/sd1-f16.safetensors" sd1.tsv; family sd1 "${SIZE_sd1:-512}" "$BENCH/sd1-f16.safetensors" ;;
    sdxl) need "$BENCH/sdxl-f16.safetensors" sdxl.tsv; family sdxl "${SIZE_sdxl:-1024}" "$BENCH/sdxl-f16.safetensors" ;;
    upscale) # README's `fmimage upscale`: 4x RRDBNet on a 512x512 PNG
        up=$BENCH/realesrgan-x4plus-f16.safetensors
        need "$up" realesrgan-x4plus.tsv
        in=$OUT/sd1-base.png
        [ -f "$in" ] || { mask "$in" 512; }
        run upscale 2048x2048 "$OUT/sd1-4x.png" upscale -m "$up" "$in" ;;
    sd1-lora) # issue 16: a rank-8 LoRA/LoCon on every layer; a few tensors as fmimage merges them vs A1111's merge
        need "$BENCH/sd1-f16.safetensors" sd1.tsv
        lora=$OUT/sd1-lora8.safetensors
        [ -f "$lora" ] || "$MKLORA" tests/data/layouts/sd1.tsv "$lora" --rank 8 --seed 16 || exit 1
        LORAMERGE=$LORAMERGE PYTHONPATH=/usr/lib/python3/dist-packages flock /tmp/fullsize.lock \
            /usr/bin/python3 tools/ref/lora_fullsize_ref.py "$BENCH/sd1-f16.safetensors" "$lora" \
            "$OUT" 0.8 1.0 >"$OUT/sd1-lora.log" 2>&1
        rc=$?
        echo "sd1-lora: $(tail -1 "$OUT/sd1-lora.log") $([ $rc -eq 0 ] && echo ok || echo "FAIL (exit $rc)")"
        [ $rc -eq 0 ] || fail=1 ;;
    *) echo "check_fullsize: $f: not sd1, sdxl, upscale or sd1-lora" >&2; exit 2 ;;
    esac
done
exit $fail
