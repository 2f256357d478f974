# FreeType for the X/Y/Z grid's labels (cli/grid.c): only the fmimage
# binary links it, the library does not.
CLI_LIBS += $(shell pkg-config --libs freetype2)
$(BUILD)/cli/grid.o: CFLAGS += $(shell pkg-config --cflags freetype2)
