/* The CLIP BPE merges (assets/clip/bpe_simple_vocab_16e6.txt.gz, MIT licence,
 * see assets/clip/README.md) embedded byte for byte in the library, so the
 * tokenizer reads nothing at run time. Assembled by textenc/module.mk from
 * the repository root (the .incbin path is relative to it). */
    .section .rodata
    .global te_clip_bpe_gz
    .global te_clip_bpe_gz_end
    .type te_clip_bpe_gz, @object
    .balign 16
te_clip_bpe_gz:
    .incbin "assets/clip/bpe_simple_vocab_16e6.txt.gz"
te_clip_bpe_gz_end:
    .byte 0
    .size te_clip_bpe_gz, . - te_clip_bpe_gz
    .section .note.GNU-stack,"",@progbits
