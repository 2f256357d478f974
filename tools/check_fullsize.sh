#!/bin/sh
# README's "Editing and upscaling" commands on random full-size checkpoints
# (issue 18): inpaint, outpaint, hires fix and a 4x upscale, 2 steps each.
# Prints one row per run: name, wall seconds, peak RSS (MB), PNG size, ok/FAIL.
# Too slow for make test (minutes per SDXL run); `make check-fullsize` runs it.
# Each run takes /tmp/fullsize.lock (one full-size model in RAM at a time on a
# shared machine): do not run this script itself under that lock.
#
#   tools/check_fullsize.sh [RUN...]     RUN: sd1 sdxl upscale (default all three),
#                                        sd15-folder sd21-folder sdxl-folder (issue 17),
#                                        sd1-lora (issue 16: a rank-8 LoRA's merged tensors vs
#                                        A1111's merge, tools/ref/lora_fullsize_ref.py; needs A1111_LORA),
#                                        sdxl-lora (the same on SDXL: te1, te2 and U-Net),
#                                        sd1-ckpt, sd1-q8_0, sdxl-q8_0 (issue 17, below)
#
# FAMILY-folder: a random full-size diffusers folder made by diffusers itself
# and the checkpoint diffusers' conversion script makes of it, as .safetensors
# and torch.save's .ckpt (tools/ref/diffusers_fullsize.py, under
# $BENCH/diffusers-FAMILY*, made when absent; needs pip's diffusers 0.27.2,
# transformers 4.40.2). Checks, 1 step at 512x512: -m DIR/, -m the .safetensors
# and -m the .ckpt draw the same pixels; `fmimage convert DIR` and `fmimage
# convert X.ckpt` give the script's tensors bit for bit; `fmimage convert
# --type q8_0` to GGUF draws within Q8_0_DB (default 30) dB of the F16 image.
#
# sd1-ckpt: the random SD 1.5 file written by torch.save as a Lightning
# checkpoint (tools/ref/ckpt_fullsize.py, $BENCH/sd1-f16.ckpt, made when
# absent); -m the .ckpt draws the .safetensors' pixels exactly, and `fmimage
# convert` of the .ckpt gives the .safetensors' tensors bit for bit.
# FAMILY-q8_0: `fmimage convert --type q8_0` of the F16 file to GGUF, and its
# image (1 step, SIZE_FAMILY) against the F16 file's, both --precision fp32:
# PSNR >= Q8_0_DB (default 30); with random weights the image PSNR says
# little, so the row also prints the weights' own signal-to-noise ratio
# (compare_weights.py q8_0: every quantised tensor dequantised as ggml does
# against the F16 file's).
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

LOCK=/tmp/fullsize.lock
PY="env PYTHONPATH=/usr/lib/python3/dist-packages /usr/bin/python3" # Debian's numpy for Debian's torch

timed() { # timed NAME CMD...: runs CMD under the lock; sets rc, wall, rss
    name=$1
    shift
    flock "$LOCK" /usr/bin/time -v -o "$OUT/$name.time" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$OUT/$name.time")
    rss=$(awk -F': ' '/Maximum resident set size/ { printf "%d", $2 / 1024 }' "$OUT/$name.time")
}

run() { # run NAME WANT_SIZE OUT.png fmimage-args...
    name=$1 want=$2 png=$3
    shift 3
    rm -f "$png"
    timed "$name" "$FM" "$@" -o "$png"
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

check() { # check NAME compare_weights.py-args...: a comparison's row
    c=$1
    shift
    said=$($PY tools/ref/compare_weights.py "$@" 2>&1)
    if [ $? -eq 0 ]; then ok=ok; else ok=FAIL; fail=1; fi
    line=$(printf '%s\n' "$said" | tail -1)
    printf '%-14s %s: %s\n' "$c" "$ok" "$line"
}

convert() { # convert NAME IN OUT [--type T]: fmimage convert as a row
    name=$1 in=$2 out=$3
    shift 3
    timed "$name" "$FM" convert "$in" -o "$out" --force -q "$@"
    ok=ok
    [ $rc -eq 0 ] || { ok="FAIL (exit $rc)"; fail=1; }
    printf '%-14s %8ss %7s MB  %-10s %s\n' "$name" "$wall" "$rss" convert "$ok"
}

folder() { # folder FAMILY: issue 17's diffusers folder, .ckpt and GGUF checks
    f=$1 d=$BENCH/diffusers-$1 o=$OUT/$1
    if [ ! -f "$d.ldm.ckpt" ]; then
        flock "$LOCK" $PY tools/ref/diffusers_fullsize.py "$f" >"$OUT/$f-make.log" 2>&1 ||
            { echo "check_fullsize: $f: tools/ref/diffusers_fullsize.py failed ($OUT/$f-make.log)" >&2; fail=1; return; }
    fi
    m="--steps 1 -W 512 -H 512 --seed 1"
    # SD 2.1 is v: the folder's scheduler says so; a bare file is probed as A1111 does (random weights: either)
    [ "$f" = sd21 ] && m="$m --prediction v"
    run "$f.dir" 512x512 "$o-dir.png" "a red fox" -m "$d/" $m
    run "$f.ldm" 512x512 "$o-ldm.png" "a red fox" -m "$d.ldm.safetensors" $m
    run "$f.ckpt" 512x512 "$o-ckpt.png" "a red fox" -m "$d.ldm.ckpt" $m
    check "$f.dir=ldm" images "$o-ldm.png" "$o-dir.png"
    check "$f.ckpt=ldm" images "$o-ldm.png" "$o-ckpt.png"
    convert "$f.conv-dir" "$d/" "$o-dir.safetensors"
    check "$f.conv-dir" tensors "$d.ldm.safetensors" "$o-dir.safetensors"
    rm -f "$o-dir.safetensors"
    convert "$f.conv-ckpt" "$d.ldm.ckpt" "$o-ckpt.safetensors"
    check "$f.conv-ckpt" tensors "$d.ldm.safetensors" "$o-ckpt.safetensors"
    rm -f "$o-ckpt.safetensors"
    convert "$f.conv-q8_0" "$d.ldm.safetensors" "$o.q8_0.gguf" --type q8_0
    run "$f.q8_0" 512x512 "$o-q8_0.png" "a red fox" -m "$o.q8_0.gguf" $m
    check "$f.q8_0~ldm" images "$o-ldm.png" "$o-q8_0.png" "${Q8_0_DB:-30}"
    rm -f "$o.q8_0.gguf"
}

ckpt_rows() { # issue 17: a full-size torch.save .ckpt against its .safetensors
    st=$BENCH/sd1-f16.safetensors ck=$BENCH/sd1-f16.ckpt o=$OUT/sd1
    need "$st" sd1.tsv
    if [ ! -f "$ck" ]; then
        flock "$LOCK" $PY tools/ref/ckpt_fullsize.py "$st" "$ck" >"$OUT/sd1-ckpt-make.log" 2>&1 ||
            { echo "check_fullsize: sd1-ckpt: tools/ref/ckpt_fullsize.py failed ($OUT/sd1-ckpt-make.log)" >&2; fail=1; return; }
    fi
    m="--steps 1 -W 512 -H 512 --seed 1"
    run sd1.st 512x512 "$o-st.png" "a red fox" -m "$st" $m
    run sd1.ckpt 512x512 "$o-ckpt.png" "a red fox" -m "$ck" $m
    check sd1.ckpt=st images "$o-st.png" "$o-ckpt.png"
    convert sd1.conv-ckpt "$ck" "$o-ckpt.safetensors"
    check sd1.conv-ckpt tensors "$st" "$o-ckpt.safetensors"
    rm -f "$o-ckpt.safetensors"
}

q8_rows() { # q8_rows FAMILY SIDE: issue 17's Q8_0 GGUF against the F16 file in fp32
    f=$1 s=$2 st=$BENCH/$1-f16.safetensors o=$OUT/$1
    need "$st" "$f.tsv"
    m="--steps 1 -W $s -H $s --seed 1 --precision fp32"
    run "$f.fp32" "${s}x$s" "$o-fp32.png" "a red fox" -m "$st" $m
    convert "$f.conv-q8_0" "$st" "$o.q8_0.gguf" --type q8_0
    run "$f.q8_0" "${s}x$s" "$o-q8_0.png" "a red fox" -m "$o.q8_0.gguf" $m
    check "$f.q8_0~fp32" images "$o-fp32.png" "$o-q8_0.png" "${Q8_0_DB:-30}"
    check "$f.q8_0.snr" q8_0 "$st" "$o.q8_0.gguf"
    rm -f "$o.q8_0.gguf"
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
    sd1-ckpt) ckpt_rows ;;
    sd1-q8_0) q8_rows sd1 "${SIZE_sd1:-512}" ;;
    sdxl-q8_0) q8_rows sdxl "${SIZE_sdxl:-1024}" ;;
    sd15-folder | sd21-folder | sdxl-folder) folder "${f%-folder}" ;;
    sd1-lora | sdxl-lora) # issue 16: a rank-8 LoRA/LoCon on every layer A1111 maps (SDXL: U-Net, te1, te2);
        # a few tensors as fmimage merges them vs A1111's merge
        fam=${f%-lora}
        need "$BENCH/$fam-f16.safetensors" "$fam.tsv"
        lora=$OUT/$fam-lora8.safetensors
        [ -f "$lora" ] || "$MKLORA" "tests/data/layouts/$fam.tsv" "$lora" --rank 8 --seed 16 || exit 1
        LORAMERGE=$LORAMERGE flock "$LOCK" $PY tools/ref/lora_fullsize_ref.py "$BENCH/$fam-f16.safetensors" "$lora" \
            "$OUT" 0.8 1.0 >"$OUT/$f.log" 2>&1
        rc=$?
        echo "$f: $(tail -1 "$OUT/$f.log") $([ $rc -eq 0 ] && echo ok || echo "FAIL (exit $rc)")"
        [ $rc -eq 0 ] || fail=1 ;;
    *) echo "check_fullsize: $f: not sd1, sdxl, upscale, sd15-folder, sd21-folder, sdxl-folder, sd1-lora, sdxl-lora, sd1-ckpt, sd1-q8_0 or sdxl-q8_0" >&2; exit 2 ;;
    esac
done
exit $fail
