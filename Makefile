# fmimage build. Every module folder's *.c goes into libfmimage.a and
# libfmimage.so (SONAME libfmimage.so.0; the objects are -fPIC); every
# tests/test_*.c is one cmocka program; every tools/*.c is one program.
# New files need no Makefile edit.
#
#   make              library + fmimage (-O3 -march=native)
#   make PORTABLE=1   x86-64-v2 baseline; AVX2/AVX-512 kernels chosen at run time
#   make test         build and run every test
#   make sanitize     the tests under ASan + UBSan (build/san)
#   make test-cluster Slurm and NFS tests (root; tools/install-deps.sh --cluster)
#   make install PREFIX=/usr/local

CC      ?= gcc
PREFIX  ?= /usr/local
BUILD   ?= build
PORTABLE ?= 0
SAN     ?= 0

PKGS    := libpng libcjson libutf8proc zlib
MODULES := core kernels weights diffusion textenc unet vae samplers upscale

ifeq ($(PORTABLE),1)
  ARCH := -march=x86-64-v2 -mtune=generic -DFM_PORTABLE=1
else
  ARCH := -march=native
endif
ifeq ($(SAN),1)
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDSAN := -fsanitize=address,undefined
else
  OPT := -O3 -g
endif

CFLAGS  ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(ARCH) -fopenmp -Wall -Wextra \
           -Iinclude -I. $(shell pkg-config --cflags $(PKGS))
LDLIBS   = $(shell pkg-config --libs $(PKGS)) $(EXTRA_LIBS) -lm
LDFLAGS += -fopenmp $(LDSAN)

# A module may add a fragment <module>/module.mk that appends to
# EXTRA_LIBS (link flags) or LIB_EXTRA_OBJ (objects built by its own rules).
EXTRA_LIBS    :=
LIB_EXTRA_OBJ :=
-include $(wildcard $(addsuffix /module.mk,$(MODULES)))
# cli/module.mk: CLI_LIBS, link flags only the fmimage binary needs.
CLI_LIBS :=
-include cli/module.mk

LIB_SRC  := $(wildcard $(addsuffix /*.c,$(MODULES)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(LIB_EXTRA_OBJ)
LIB      := $(BUILD)/libfmimage.a
# The shared library: libfmimage.so.0 is its SONAME (the ABI, 0 while the
# version is 0.x), libfmimage.so.$(FM_VERSION) the file, libfmimage.so the
# name -lfmimage finds.
FM_VERSION := $(shell sed -n 's/^\#define FM_VERSION "\(.*\)"/\1/p' include/fmimage.h)
SONAME   := libfmimage.so.0
SOLIB    := $(BUILD)/libfmimage.so.$(FM_VERSION)
CLI_SRC  := $(wildcard cli/*.c)
BIN      := $(BUILD)/fmimage
TEST_SRC := $(wildcard tests/test_*.c)
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# server/ (fmimage serve, layer 6): its own archive on libmicrohttpd, linked
# into the program and tests only, so libfmimage itself needs no HTTP library.
SRV_SRC  := $(wildcard server/*.c)
SRV_LIB  := $(BUILD)/libfmserver.a
SRV_LIBS := $(shell pkg-config --libs libmicrohttpd) -lpthread
TOOL_SRC := $(wildcard tools/*.c)
TOOLS    := $(TOOL_SRC:tools/%.c=$(BUILD)/tools/%)
# Code only tests and tools use (random checkpoints, the safetensors
# writer): its own archive, linked before the library, never installed.
TESTLIB_SRC := $(wildcard tools/lib/*.c)
TESTLIB  := $(BUILD)/libfmtest.a

.PHONY: all test sanitize install clean demo demo-model bench tools test-clients bench-peers soak
.SECONDARY:
all: $(LIB) $(SOLIB) $(BIN) $(TOOLS)
	@ln -sf $(BUILD)/fmimage fmimage 2>/dev/null || true

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# Position-independent, so the same objects make both libraries (rebuilt
# when this file changes: a tree built before -fPIC cannot link the .so).
$(LIB_OBJ): CFLAGS += -fPIC
$(LIB_OBJ): Makefile

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# -z defs: every dependency is recorded (NEEDED), so a program links with
# plain `pkg-config --libs fmimage`.
$(SOLIB): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,-z,defs $(LDFLAGS) -o $@ $^ $(LDLIBS)
	ln -sf $(notdir $@) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/libfmimage.so

$(TESTLIB): $(TESTLIB_SRC:%.c=$(BUILD)/%.o)
	@rm -f $@
	ar rcs $@ $^

$(SRV_SRC:%.c=$(BUILD)/%.o): CFLAGS += $(shell pkg-config --cflags libmicrohttpd)
$(SRV_LIB): $(SRV_SRC:%.c=$(BUILD)/%.o)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(CLI_SRC:%.c=$(BUILD)/%.o) $(SRV_LIB) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(SRV_LIBS) $(CLI_LIBS)

$(BUILD)/tools/%: $(BUILD)/tools/%.o $(TESTLIB) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TESTLIB) $(SRV_LIB) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(SRV_LIBS) $(shell pkg-config --libs cmocka libpcre2-8)

tools: $(TOOLS)

# fmimage serve against published clients (PyPI, in a venv under build/)
# and a real browser (Debian's chromium + chromium-driver): A1111's webuiapi
# runs txt2img, img2img, options, interrupt; comfy-api-simplified runs
# ComfyUI's default and img2img workflows over /prompt, /upload/image and
# /ws; selenium drives the web page.
# Not part of `make test` (it needs the network and a browser); .ci/run runs it.
CLIENTS_VENV := $(BUILD)/clients-venv
test-clients: $(BIN)
	@[ -x $(CLIENTS_VENV)/bin/python ] || python3 -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install -q webuiapi comfy-api-simplified selenium
	FM_BIN=$(BIN) $(CLIENTS_VENV)/bin/python tests/clients/test_webuiapi.py
	FM_BIN=$(BIN) $(CLIENTS_VENV)/bin/python tests/clients/test_comfy.py
	FM_BIN=$(BIN) $(CLIENTS_VENV)/bin/python tests/clients/test_page.py

# fmimage serve under load and faults (tests/soak/soak.sh; minutes, not in
# make test): 8 clients x 25 txt2img equal to the CLI, 503s counted, RSS
# within 5%, kill -9 and restart, hang-ups; then the same on the ASan build,
# its quarantine off so that freed memory leaves the RSS and the 5% holds.
soak: $(BIN)
	FM_BIN=$(BIN) tests/soak/soak.sh
	$(MAKE) BUILD=build/san SAN=1 build/san/fmimage
	ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=0 FM_BIN=build/san/fmimage tests/soak/soak.sh

# README's "Editing and upscaling" commands on random full-size SD 1.5 and
# SDXL checkpoints, 2 steps: wall time, peak RSS, PNG size (minutes; not in
# make test).
.PHONY: check-fullsize
check-fullsize: $(BIN) $(BUILD)/tools/mkckpt $(BUILD)/tools/mklora $(BUILD)/tools/loramerge
	FM=$(BIN) MKCKPT=$(BUILD)/tools/mkckpt MKLORA=$(BUILD)/tools/mklora LORAMERGE=$(BUILD)/tools/loramerge \
	    OUT=$(BUILD)/fullsize tools/check_fullsize.sh $(RUNS)

# tests/test_noalloc counts the library's calls to the C allocator while it
# samples: its link redirects them (and smp_sample, the counting window).
comma := ,
NOALLOC_WRAP := malloc calloc realloc posix_memalign aligned_alloc strdup strndup smp_sample
$(BUILD)/tests/test_noalloc: LDFLAGS += $(addprefix -Wl$(comma)--wrap=,$(NOALLOC_WRAP))

# Tests run from the repository root (they read tests/data/...). Each test
# program runs even when an earlier one failed; the target fails at the end.
# --precision auto is fp32 in them (FMIMAGE_PRECISION_CACHE=off: no kernel
# timing, whose outcome could differ between runs, and no write to ~/.cache);
# tests/test_precision_auto.c times the kernels into its own file.
test: $(TESTS) $(BIN) $(TOOLS)
	@fail=0; for t in $(TESTS); do echo "== $$t"; FMIMAGE_PRECISION_CACHE=off OMP_WAIT_POLICY=passive FM_BIN=$(BIN) FM_TOOLS=$(BUILD)/tools $$t || fail=1; done; \
	 if [ $$fail = 0 ]; then echo "all test programs passed"; else echo "some test programs FAILED"; exit 1; fi

sanitize:
	$(MAKE) BUILD=build/san SAN=1 test

# Many machines (root, ~2 min): a real single-node Slurm runs the example
# array job (tests/slurm), two NFS mounts share a set (tests/nfs); each
# skips with a line saying why where its daemons cannot start.
.PHONY: test-cluster
test-cluster: $(BIN)
	@fail=0; for t in tests/slurm/test_slurm.sh tests/nfs/test_nfs.sh; do echo "== $$t"; \
	  OMP_WAIT_POLICY=passive FM_BIN=$(BIN) timeout 1200 $$t || fail=1; done; exit $$fail

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	           $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/share/fmimage
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/fmimage
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/libfmimage.a
	install -m 755 $(SOLIB) $(DESTDIR)$(PREFIX)/lib/$(notdir $(SOLIB))
	ln -sf $(notdir $(SOLIB)) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libfmimage.so
	install -m 644 include/fmimage.h $(DESTDIR)$(PREFIX)/include/fmimage.h
	cp -r assets/. $(DESTDIR)$(PREFIX)/share/fmimage/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@PKGS@|$(PKGS)|g' -e 's|@VERSION@|$(FM_VERSION)|g' \
	    fmimage.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/fmimage.pc

# The demo: install what is missing, build, draw one image with the shipped
# model (the tiny golden model until the demo model exists).
DEMO_MODEL := assets/demo/fmimage-demo.safetensors
DEMO_PROMPT ?= a red circle on a blue background
demo:
	@./tools/install-deps.sh
	@$(MAKE) --no-print-directory all
	@if [ -f $(DEMO_MODEL) ]; then \
	   $(BIN) "$(DEMO_PROMPT)" --seed 1 --force -o build/demo.png; \
	 else \
	   $(BIN) -m tests/data/tiny-sd1.safetensors "a red fox in snow" -W 64 -H 64 --seed 42 --force -o build/demo.png; \
	 fi
	@echo "wrote build/demo.png"

# Re-trains the demo model (Python + Debian's python3-torch; offline tool).
demo-model: all
	./tools/train_demo/run.sh

# Side-by-side speed and memory figures (random full-size checkpoints are
# cached under $$XDG_CACHE_HOME/fmimage).
bench: all
	./tools/bench.sh

# PyTorch, ONNX Runtime and OpenVINO on the same modules (tools/peers).
bench-peers: all
	./tools/peers/peers.sh

clean:
	rm -rf build fmimage

-include $(shell find $(BUILD) -name '*.d' -type f 2>/dev/null)

# libFuzzer harnesses (tests/fuzz/fuzz_*.c, clang): each is built with
# ASan+UBSan into build/fuzz/ and run for FUZZ_SECONDS on its seed corpus
# tests/fuzz/corpus/<target>/ (new inputs go to build/fuzz/corpus/<target>/).
# Crashes land in build/fuzz/crash-*; copy them to tests/fuzz/regressions/.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_BUILD   := build/fuzz
FUZZ_FLAGS   := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -fopenmp -Wall -Wextra \
                -Wno-unknown-pragmas -Iinclude -I. $(shell pkg-config --cflags $(PKGS))
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS    := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
# The parsers live in core, weights, diffusion, textenc and server (the archive only lends a
# harness the objects it references); the kernels' plain loops for the LoRA merge
# (tests/fuzz/fuzz_lora.c routes kn_sgemm to kn_sgemm_ref; the SIMD kernels are not needed).
FUZZ_LIB_SRC := $(wildcard core/*.c weights/*.c diffusion/*.c textenc/*.c) kernels/reference.c \
                server/parse.c server/util.c server/comfy.c server/comfy_graph.c server/image_io.c \
                samplers/names.c
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_BUILD)/obj/%.o) $(FUZZ_BUILD)/obj/textenc/clip_bpe_blob.o \
                $(FUZZ_BUILD)/obj/cli/promptfile.o $(FUZZ_BUILD)/obj/cli/wildcards.o

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@
$(FUZZ_BUILD)/obj/textenc/clip_bpe_blob.o: textenc/clip_bpe_blob.S assets/clip/bpe_simple_vocab_16e6.txt.gz
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -c -Wa,-I. $< -o $@
$(FUZZ_BUILD)/libfuzzlib.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_BUILD)/libfuzzlib.a
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -fopenmp -o $@ $^ $(LDLIBS)

.PHONY: fuzz fuzz-build
fuzz-build: $(FUZZ_BINS)
fuzz: fuzz-build
	@mkdir -p $(FUZZ_BUILD)/corpus; fail=0; \
	 for b in $(FUZZ_BINS); do t=$${b##*/fuzz_}; mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	   echo "== fuzz $$t ($(FUZZ_SECONDS) s)"; \
	   $$b -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/crash-$$t- \
	       $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t || fail=1; \
	 done; exit $$fail
