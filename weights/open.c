/* wt_open: one entry point for every weight file format. The format is
 * told from the file's first bytes, so a renamed file still opens and a
 * file of another kind gets a message naming what it is. */
#include "weights/diffusers.h"
#include "weights/gguf.h"
#include "weights/pickle.h"
#include "weights/safetensors.h"
#include "weights/source.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Up to n first bytes of path into buf; the count read, or -1 (errno). */
static ssize_t read_head(const char *path, unsigned char *buf, size_t n)
{
    /* O_NONBLOCK: a FIFO given as a model must not hang the open */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    struct stat sb;
    ssize_t got = -1;
    if (fstat(fd, &sb) == 0) {
        if (S_ISREG(sb.st_mode)) got = pread(fd, buf, n, 0);
        else errno = S_ISDIR(sb.st_mode) ? EISDIR : EINVAL;
    }
    int e = errno;
    close(fd);
    errno = e;
    return got;
}

wt_source *wt_open(const char *path, fm_error *err)
{
    if (wt_is_diffusers_dir(path)) return wt_diffusers_open(path, err);
    unsigned char head[9] = {0};
    ssize_t n = read_head(path, head, sizeof head);
    if (n < 0 && errno == EISDIR) {
        core_fail(err, FM_EINPUT, "%s: is a directory (no model_index.json: not a diffusers folder)", path);
        return NULL;
    }
    if (n < 0) {
        /* the safetensors reader words the open errors (FIFO, ...) */
        return wt_st_open_source(path, err);
    }
    /* a safetensors header: u64 length, then JSON (whatever the length's bytes look like) */
    if (n >= 9 && head[8] == '{') return wt_st_open_source(path, err);
    if (n >= 4 && (!memcmp(head, "GGUF", 4) || !memcmp(head, "FUGG", 4))) return wt_gguf_open(path, err);
    if (n >= 4 && !memcmp(head, "PK\3\4", 4)) return wt_torch_open_source(path, err);
    /* torch.save before 1.6: pickled magic number 0x1950a86a20f9469cfc6c */
    if (n >= 4 && !memcmp(head, "\x80\x02\x8a\x0a", 4)) {
        core_fail(err, FM_EINPUT, "%s: PyTorch's legacy format (saved before torch 1.6): not read; "
                  "re-save it with a newer torch", path);
        return NULL;
    }
    if (n >= 2 && head[0] == 0x80 && head[1] <= 5) {
        core_fail(err, FM_EINPUT, "%s: a bare pickle, not a PyTorch file: not read", path);
        return NULL;
    }
    return wt_st_open_source(path, err);
}

void wt_close(wt_source *s)
{
    if (s && s->ops->close) s->ops->close(s);
}
