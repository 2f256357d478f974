/* ComfyUI's /ws progress socket: RFC 6455 text frames carrying the JSON
 * messages server.py's send_sync writes (status, execution_start,
 * execution_cached, executing, progress, executed, execution_success,
 * execution_error). libmicrohttpd upgrades the connection; in its
 * thread-per-connection mode the session runs in the connection's thread:
 * every 50 ms it reads the client's frames (ping -> pong, close -> close)
 * and reports what changed in the queue, the running job and the history.
 * Progress is sampled, not pushed: a step shorter than 50 ms may go
 * unreported, and a job that ran between two looks is reported whole
 * (start, executed, success) from the history. */
#include "internal.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

/* ---- the handshake: base64(SHA-1(key + GUID)) ---- */

static uint32_t rol(uint32_t x, int k) { return x << k | x >> (32 - k); }

static void sha1(const uint8_t *msg, size_t n, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = (n + 9 + 63) / 64 * 64;
    for (size_t off = 0; off < total; off += 64) {
        uint8_t blk[64];
        for (size_t i = 0; i < 64; i++) {
            size_t k = off + i;
            blk[i] = k < n ? msg[k] : k == n ? 0x80 : 0;
        }
        if (off + 64 == total)
            for (int i = 0; i < 8; i++) blk[56 + i] = (uint8_t)((uint64_t)n * 8 >> (56 - 8 * i));
        uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 16; i++) w[i] = (uint32_t)blk[4 * i] << 24 | (uint32_t)blk[4 * i + 1] << 16 | (uint32_t)blk[4 * i + 2] << 8 | blk[4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        for (int i = 0; i < 80; i++) {
            uint32_t f = i < 20 ? (b & c) | (~b & d) : i < 40 ? b ^ c ^ d : i < 60 ? (b & c) | (b & d) | (c & d) : b ^ c ^ d;
            uint32_t k = i < 20 ? 0x5A827999 : i < 40 ? 0x6ED9EBA1 : i < 60 ? 0x8F1BBCDC : 0xCA62C1D6;
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rol(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    for (int i = 0; i < 20; i++) out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

char *srv_ws_accept(const char *key)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[256];
    if (!key || strlen(key) > 128) return NULL;
    int n = snprintf(buf, sizeof buf, "%s%s", key, guid);
    uint8_t d[20];
    sha1((const uint8_t *)buf, (size_t)n, d);
    return srv_base64_encode(d, sizeof d);
}

/* ---- frames ---- */

static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One unmasked frame (the server never masks). */
static int send_frame(int fd, int opcode, const void *data, size_t n)
{
    uint8_t head[10];
    size_t h = 2;
    head[0] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        head[1] = (uint8_t)n;
    } else if (n < 65536) {
        head[1] = 126;
        head[2] = (uint8_t)(n >> 8);
        head[3] = (uint8_t)n;
        h = 4;
    } else {
        head[1] = 127;
        for (int i = 0; i < 8; i++) head[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        h = 10;
    }
    return send_all(fd, head, h) || send_all(fd, data, n) ? -1 : 0;
}

static int send_json(int fd, cJSON *msg)
{
    char *t = cJSON_PrintUnformatted(msg);
    cJSON_Delete(msg);
    int rc = t ? send_frame(fd, 1, t, strlen(t)) : -1;
    free(t);
    return rc;
}

#define WS_IN 4096 /* ComfyUI's clients send small JSON or control frames only */

/* Handles the complete client frames in buf (masked, as RFC 6455 wants):
 * ping -> pong, close -> 1; a frame too large for the buffer -> -1. */
static int read_frames(int fd, uint8_t *buf, size_t *len)
{
    for (;;) {
        size_t n = *len, h = 2, plen;
        if (n < 2) return 0;
        int opcode = buf[0] & 15, masked = buf[1] >> 7;
        plen = buf[1] & 127;
        if (plen == 126) {
            if (n < 4) return 0;
            plen = (size_t)buf[2] << 8 | buf[3];
            h = 4;
        } else if (plen == 127) {
            return -1;
        }
        if (!masked || h + 4 + plen > WS_IN) return -1;
        if (n < h + 4 + plen) return 0;
        uint8_t *mask = buf + h, *pay = buf + h + 4;
        for (size_t i = 0; i < plen; i++) pay[i] ^= mask[i % 4];
        if (opcode == 8) {
            send_frame(fd, 8, pay, plen < 2 ? plen : 2);
            return 1;
        }
        if (opcode == 9 && send_frame(fd, 10, pay, plen)) return -1;
        memmove(buf, buf + h + 4 + plen, n - (h + 4 + plen));
        *len = n - (h + 4 + plen);
    }
}

/* ---- messages (server.py / execution.py) ---- */

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec * 1000 + (double)(t.tv_nsec / 1000000);
}

static cJSON *message(const char *type, cJSON **data)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "type", type);
    *data = cJSON_AddObjectToObject(m, "data");
    return m;
}

static cJSON *status_msg(int remaining, const char *sid)
{
    cJSON *d, *m = message("status", &d);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(cJSON_AddObjectToObject(d, "status"), "exec_info"), "queue_remaining",
                            remaining);
    if (sid) cJSON_AddStringToObject(d, "sid", sid);
    return m;
}

static cJSON *prompt_msg(const char *type, const char *prompt_id)
{
    cJSON *d, *m = message(type, &d);
    cJSON_AddStringToObject(d, "prompt_id", prompt_id);
    cJSON_AddNumberToObject(d, "timestamp", now_ms());
    return m;
}

static cJSON *executing_msg(const char *node, const char *prompt_id)
{
    cJSON *d, *m = message("executing", &d);
    cJSON_AddItemToObject(d, "node", node ? cJSON_CreateString(node) : cJSON_CreateNull());
    if (node) cJSON_AddStringToObject(d, "display_node", node);
    cJSON_AddStringToObject(d, "prompt_id", prompt_id);
    return m;
}

static cJSON *progress_msg(int value, int max, const char *prompt_id, const char *node)
{
    cJSON *d, *m = message("progress", &d);
    cJSON_AddNumberToObject(d, "value", value);
    cJSON_AddNumberToObject(d, "max", max);
    cJSON_AddStringToObject(d, "prompt_id", prompt_id);
    cJSON_AddStringToObject(d, "node", node);
    return m;
}

/* The messages of a job's start: execution_start, execution_cached (none
 * cached), executing its sampler. */
static void add_start(cJSON *out, const srv_job *j)
{
    cJSON_AddItemToArray(out, prompt_msg("execution_start", j->prompt_id));
    cJSON *c = prompt_msg("execution_cached", j->prompt_id);
    cJSON_AddArrayToObject(cJSON_GetObjectItem(c, "data"), "nodes");
    cJSON_AddItemToArray(out, c);
    cJSON_AddItemToArray(out, executing_msg(j->sampler_node, j->prompt_id));
}

/* ... and of its end: executed with the images, then execution_success and
 * executing null, or execution_error. */
static void add_end(cJSON *out, const srv_job *j)
{
    if (j->status != 200) {
        cJSON *d, *m = message("execution_error", &d);
        cJSON_AddStringToObject(d, "prompt_id", j->prompt_id);
        cJSON_AddStringToObject(d, "node_id", j->sampler_node);
        cJSON_AddStringToObject(d, "node_type", "KSampler");
        cJSON_AddStringToObject(d, "exception_message", j->msg);
        cJSON_AddStringToObject(d, "exception_type", "RuntimeError");
        cJSON_AddArrayToObject(d, "traceback");
        cJSON_AddObjectToObject(d, "current_inputs");
        cJSON_AddObjectToObject(d, "current_outputs");
        cJSON_AddItemToArray(out, m);
        return;
    }
    cJSON_AddItemToArray(out, executing_msg(j->save_node, j->prompt_id));
    cJSON *d, *m = message("executed", &d);
    cJSON_AddStringToObject(d, "node", j->save_node);
    cJSON_AddStringToObject(d, "display_node", j->save_node);
    cJSON_AddItemToObject(cJSON_AddObjectToObject(d, "output"), "images", srv_comfy_images(j));
    cJSON_AddStringToObject(d, "prompt_id", j->prompt_id);
    cJSON_AddItemToArray(out, m);
    cJSON_AddItemToArray(out, prompt_msg("execution_success", j->prompt_id));
    cJSON_AddItemToArray(out, executing_msg(NULL, j->prompt_id));
}

/* What a session has told its client so far. */
typedef struct ws_seen {
    int remaining;        /* queue_remaining last sent */
    long done_number;     /* history entries up to this number were reported (or predate the session) */
    char started[40];     /* the running job whose start was sent */
    int step;
} ws_seen;

static int queue_remaining(const srv_state *s)
{
    int n = s->current && s->current->async;
    for (int i = 0; i < s->q_n; i++) n += s->q[(s->q_head + i) % s->q_cap]->async;
    return n;
}

/* The new messages since `seen`, built under mu. */
static cJSON *changes(srv_state *s, ws_seen *seen)
{
    cJSON *out = cJSON_CreateArray();
    for (int i = 0; i < s->n_history; i++) {
        const srv_job *j = s->history[i];
        if (j->number <= seen->done_number) continue;
        if (strcmp(seen->started, j->prompt_id)) add_start(out, j);
        add_end(out, j);
        seen->done_number = j->number;
        seen->started[0] = 0;
    }
    const srv_job *cur = s->current && s->current->async ? s->current : NULL;
    if (cur && strcmp(seen->started, cur->prompt_id)) {
        add_start(out, cur);
        snprintf(seen->started, sizeof seen->started, "%s", cur->prompt_id);
        seen->step = 0;
    }
    if (cur && s->steps && s->step != seen->step) {
        cJSON_AddItemToArray(out, progress_msg(s->step, s->steps, cur->prompt_id, cur->sampler_node));
        seen->step = s->step;
    }
    int remaining = queue_remaining(s);
    if (remaining != seen->remaining) {
        cJSON_AddItemToArray(out, status_msg(remaining, NULL));
        seen->remaining = remaining;
    }
    return out;
}

void srv_ws_session(srv_state *s, int fd, const char *client_id, const char *extra, size_t extra_n)
{
    uint8_t in[WS_IN];
    size_t in_n = extra_n < sizeof in ? extra_n : 0;
    memcpy(in, extra, in_n);
    ws_seen seen = {0};
    pthread_mutex_lock(&s->mu);
    int full = s->n_ws >= SRV_WS_MAX;
    if (!full) s->n_ws++;
    seen.remaining = queue_remaining(s);
    for (int i = 0; i < s->n_history; i++)
        if (s->history[i]->number > seen.done_number) seen.done_number = s->history[i]->number;
    pthread_mutex_unlock(&s->mu);
    if (full) return;
    int rc = send_json(fd, status_msg(seen.remaining, client_id));
    while (!rc) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) > 0) {
            ssize_t r = recv(fd, in + in_n, sizeof in - in_n, MSG_DONTWAIT);
            if (r <= 0 || (p.revents & (POLLHUP | POLLERR))) break;
            in_n += (size_t)r;
            if (read_frames(fd, in, &in_n)) break;
        }
        pthread_mutex_lock(&s->mu);
        int stopping = s->stopping;
        cJSON *msgs = changes(s, &seen);
        pthread_mutex_unlock(&s->mu);
        cJSON *m;
        cJSON_ArrayForEach(m, msgs) if (!rc) rc = send_json(fd, cJSON_Duplicate(m, 1));
        cJSON_Delete(msgs);
        if (stopping) {
            static const uint8_t going_away[2] = {0x03, 0xe9}; /* 1001 */
            send_frame(fd, 8, going_away, 2);
            break;
        }
    }
    pthread_mutex_lock(&s->mu);
    s->n_ws--;
    pthread_mutex_unlock(&s->mu);
}
