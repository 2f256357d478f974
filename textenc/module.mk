# textenc: the tokenizer embeds the CLIP BPE merges in the library.
# textenc/clip_bpe_blob.S pulls the .gz in with the assembler's .incbin (no
# generated source, no objcopy); the tokenizer inflates it with zlib.
EXTRA_LIBS    += -lz
LIB_EXTRA_OBJ += $(BUILD)/textenc/clip_bpe_blob.o

$(BUILD)/textenc/clip_bpe_blob.o: textenc/clip_bpe_blob.S assets/clip/bpe_simple_vocab_16e6.txt.gz
	@mkdir -p $(dir $@)
	$(CC) -c -Wa,-I. $< -o $@
