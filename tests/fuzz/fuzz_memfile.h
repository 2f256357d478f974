/* fuzz_memfile: the fuzz input as a file the real loaders open by path.
 * One memfd per process (libFuzzer runs inputs one at a time), reached as
 * /proc/self/fd/N, so the harness exercises the same open/stat/mmap/fread
 * code the CLI does without touching the disk. */
#ifndef FM_FUZZ_MEMFILE_H
#define FM_FUZZ_MEMFILE_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *fuzz_memfile(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz-input", MFD_CLOEXEC);
        if (fd < 0) abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) abort();
    return path;
}

#endif
