/* The HTTP side: libmicrohttpd, one thread per connection (a synchronous
 * txt2img waits in its thread; the connection limit bounds them), the
 * security rules (loopback unless authenticated, Basic auth compared in
 * constant time, body and connection limits, CORS off unless asked) and
 * the routes. */
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include "core/core.h"

typedef struct conn_body {
    char *buf;
    size_t len, cap;
    int too_big;
    struct MHD_PostProcessor *pp; /* POST /upload/image: multipart form */
    srv_upload form;
} conn_body;

typedef struct http_ctx {
    srv_state *s;
    const srv_config *c;
    size_t body_limit;
} http_ctx;

static enum MHD_Result send_bytes(struct MHD_Connection *conn, const http_ctx *h, int status, const char *type,
                                  char *data, size_t n)
{
    const char *t = data ? data : "{\"error\":\"RuntimeError\",\"detail\":\"out of memory\"}";
    if (!data) n = strlen(t);
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)t, MHD_RESPMEM_MUST_COPY);
    free(data);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (status == 503) MHD_add_response_header(r, "Retry-After", "5");
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Basic realm=\"fmimage\"");
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    if (h->c->cors && origin) {
        /* the list is comma-separated; "*" allows any origin */
        const char *p = h->c->cors;
        size_t on = strlen(origin);
        int ok = 0;
        while (*p && !ok) {
            size_t len = strcspn(p, ",");
            ok = (len == 1 && *p == '*') || (len == on && !strncmp(p, origin, on));
            p += len + (p[len] == ',');
        }
        if (ok) {
            MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
            MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
            MHD_add_response_header(r, "Access-Control-Allow-Headers", "Content-Type, Authorization");
            MHD_add_response_header(r, "Vary", "Origin");
        }
    }
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result send_text(struct MHD_Connection *conn, const http_ctx *h, int status, const char *type,
                                 char *text)
{
    return send_bytes(conn, h, status, type, text, text ? strlen(text) : 0);
}

static char *err_json(const char *kind, const char *detail)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "error", kind);
    cJSON_AddStringToObject(j, "detail", detail);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static int authorised(struct MHD_Connection *conn, const srv_config *c)
{
    if (!c->auth) return 1;
    const char *a = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!a || strncasecmp(a, "Basic ", 6) || strlen(a) > 4096) return 0;
    size_t n = 0;
    uint8_t *given = srv_base64_decode(a + 6, &n);
    int ok = given && srv_auth_ok(c->auth, (const char *)given, n);
    free(given);
    return ok;
}

/* /ws: the upgraded socket runs a session in this connection's thread */
static void ws_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra, size_t extra_n,
                        MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    (void)con_cls;
    const char *id = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "clientId");
    char client_id[64];
    snprintf(client_id, sizeof client_id, "%s", id ? id : "");
    struct timeval tv = {10, 0}; /* a client that stops reading is dropped */
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    srv_ws_session(cls, sock, client_id, extra, extra_n);
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
}

static int has_token(const char *header, const char *token)
{
    return header && strcasestr(header, token) != NULL;
}

static enum MHD_Result ws_upgrade(struct MHD_Connection *conn, http_ctx *h)
{
    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Key");
    const char *version = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Version");
    char *accept = NULL;
    if (!has_token(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Upgrade"), "websocket") ||
        !has_token(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Connection"), "upgrade") ||
        !version || strcmp(version, "13") || !(accept = srv_ws_accept(key)))
        return send_text(conn, h, 400, "application/json", err_json("BadRequest", "/ws needs a WebSocket (version 13) upgrade"));
    struct MHD_Response *r = MHD_create_response_for_upgrade(ws_upgraded, h->s);
    if (!r) { free(accept); return MHD_NO; }
    MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket");
    MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
    free(accept);
    enum MHD_Result rc = MHD_queue_response(conn, MHD_HTTP_SWITCHING_PROTOCOLS, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result route(struct MHD_Connection *conn, http_ctx *h, const char *url, const char *method,
                             const conn_body *b)
{
    if (!strcmp(url, "/") && !strcmp(method, "GET"))
        return send_text(conn, h, 200, "text/html; charset=utf-8", strdup(srv_page_html));
    if (!strncmp(url, "/sdapi/v1/", 10)) {
        char *out = NULL;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        int st = srv_a1111(h->s, method, url, b->buf ? b->buf : "", b->len, ci ? ci->connect_fd : -1, &out);
        return send_text(conn, h, st, "application/json", out);
    }
    if (!strcmp(url, "/ws") && !strcmp(method, "GET")) return ws_upgrade(conn, h);
    static const char *const comfy[] = {"/prompt", "/history", "/view", "/queue", "/object_info", "/interrupt", NULL};
    for (int i = 0; comfy[i]; i++) {
        size_t k = strlen(comfy[i]);
        if (strncmp(url, comfy[i], k) || (url[k] && url[k] != '/')) continue;
        char *out = NULL;
        size_t out_n = 0;
        const char *type;
        const char *file = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "filename");
        int st = srv_comfy(h->s, method, url, file, b->buf ? b->buf : "", b->len, &out, &out_n, &type);
        return send_bytes(conn, h, st, type, out, out_n ? out_n : out ? strlen(out) : 0);
    }
    return send_text(conn, h, 404, "application/json", err_json("NotFound", "Not Found"));
}

/* One multipart field of POST /upload/image, in pieces (off = bytes so
 * far): "image" (the file and its filename), "subfolder", "type",
 * "overwrite" (short strings); others are ignored. */
static enum MHD_Result upload_field(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                                    const char *content_type, const char *transfer_encoding, const char *data,
                                    uint64_t off, size_t size)
{
    (void)kind; (void)content_type; (void)transfer_encoding;
    srv_upload *u = cls;
    if (!strcmp(key, "image")) {
        if (!u->has_image && filename) {
            u->too_long |= strlen(filename) >= sizeof u->filename;
            snprintf(u->filename, sizeof u->filename, "%s", filename);
        }
        u->has_image = 1;
        if (u->n + size > u->cap) {
            size_t cap = (u->n + size) * 2;
            uint8_t *nd = realloc(u->data, cap);
            if (!nd) return MHD_NO;
            u->data = nd;
            u->cap = cap;
        }
        memcpy(u->data + u->n, data, size);
        u->n += size;
        return MHD_YES;
    }
    char *dst = !strcmp(key, "subfolder") ? u->subfolder : !strcmp(key, "type") ? u->type
              : !strcmp(key, "overwrite") ? u->overwrite : NULL;
    size_t cap = dst == u->subfolder ? sizeof u->subfolder : dst == u->type ? sizeof u->type : sizeof u->overwrite;
    if (!dst) return MHD_YES;
    if (off + size >= cap) {
        u->too_long = 1;
        return MHD_YES;
    }
    memcpy(dst + off, data, size);
    dst[off + size] = 0;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    http_ctx *h = cls;
    conn_body *b = *con_cls;
    if (!b) { /* the headers: check what can be checked before the body */
        if (!(b = calloc(1, sizeof *b))) return MHD_NO;
        *con_cls = b;
        if (!strcmp(method, "OPTIONS") && h->c->cors) return send_text(conn, h, 204, "text/plain", strdup(""));
        if (!authorised(conn, h->c))
            return send_text(conn, h, 401, "application/json", err_json("Unauthorized", "authentication required"));
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > h->body_limit)
            return send_text(conn, h, 413, "application/json", err_json("PayloadTooLarge", "the body is over the limit"));
        if (!strcmp(method, "POST") && !strcmp(url, "/upload/image") &&
            !(b->pp = MHD_create_post_processor(conn, 64 * 1024, upload_field, &b->form)))
            return send_text(conn, h, 400, "application/json", err_json("BadRequest", "not a multipart form"));
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (b->pp) {
            b->too_big |= b->len + n > h->body_limit;
            b->len += n;
            if (!b->too_big && MHD_post_process(b->pp, upload, n) != MHD_YES) b->form.too_long = 1;
            return MHD_YES;
        }
        if (b->too_big || b->len + n > h->body_limit) {
            b->too_big = 1;
            return MHD_YES;
        }
        if (b->len + n + 1 > b->cap) {
            size_t cap = (b->len + n + 1) * 2;
            if (cap > h->body_limit + 1) cap = h->body_limit + 1;
            char *nb = realloc(b->buf, cap);
            if (!nb) { b->too_big = 1; return MHD_YES; }
            b->buf = nb;
            b->cap = cap;
        }
        memcpy(b->buf + b->len, upload, n);
        b->len += n;
        b->buf[b->len] = 0;
        return MHD_YES;
    }
    if (b->too_big)
        return send_text(conn, h, 413, "application/json", err_json("PayloadTooLarge", "the body is over the limit"));
    if (b->pp) {
        char *out = NULL;
        int st = srv_comfy_upload(h->s, &b->form, &out);
        return send_text(conn, h, st, "application/json", out);
    }
    return route(conn, h, url, method, b);
}

static void on_done(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls; (void)conn; (void)toe;
    conn_body *b = *con_cls;
    if (b) {
        if (b->pp) MHD_destroy_post_processor(b->pp);
        free(b->form.data);
        free(b->buf);
        free(b);
    }
    *con_cls = NULL;
}

/* "HOST:PORT", "[V6]:PORT" or "PORT"; HOST numeric or "localhost". */
static int parse_listen(const char *l, struct sockaddr_storage *ss, int *v6, int *loopback, char *host, size_t hn,
                        fm_error *err)
{
    char h[256];
    const char *port;
    if (l[0] == '[') {
        const char *end = strchr(l, ']');
        if (!end || end[1] != ':' || (size_t)(end - l - 1) >= sizeof h) return core_fail(err, FM_EUSAGE, "--listen: %s: not [HOST]:PORT", l);
        snprintf(h, sizeof h, "%.*s", (int)(end - l - 1), l + 1);
        port = end + 2;
    } else {
        const char *colon = strrchr(l, ':');
        if (!colon) {
            snprintf(h, sizeof h, "127.0.0.1");
            port = l;
        } else {
            if ((size_t)(colon - l) >= sizeof h) return core_fail(err, FM_EUSAGE, "--listen: %s: host too long", l);
            snprintf(h, sizeof h, "%.*s", (int)(colon - l), l);
            port = colon + 1;
        }
    }
    if (!strcmp(h, "localhost")) snprintf(h, sizeof h, "127.0.0.1");
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 0 || p > 65535) return core_fail(err, FM_EUSAGE, "--listen: %s: bad port", l);
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)p);
        *v6 = 0;
        *loopback = (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
    } else if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)p);
        *v6 = 1;
        *loopback = IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr);
    } else {
        return core_fail(err, FM_EUSAGE, "--listen: %s: not a numeric address (or localhost)", l);
    }
    snprintf(host, hn, "%s", h);
    return 0;
}

static int check_auth_list(const char *a, fm_error *err)
{
    const char *p = a;
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *colon = memchr(p, ':', len);
        if (!colon || colon == p || (size_t)(colon - p) + 1 >= len)
            return core_fail(err, FM_EUSAGE, "--api-auth: each entry is USER:PASS (non-empty)");
        p += len + (p[len] == ',');
    }
    return *a ? 0 : core_fail(err, FM_EUSAGE, "--api-auth: empty");
}

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static int first_checkpoint(srv_state *s, fm_error *err)
{
    static const char *const exts[] = {".safetensors", ".gguf", ".ckpt", NULL};
    if (s->c->model) {
        const char *b = strrchr(s->c->model, '/');
        snprintf(s->checkpoint, sizeof s->checkpoint, "%s", b ? b + 1 : s->c->model);
        return 0;
    }
    int n;
    char **v = srv_list_files(s->c->models_dir, exts, 1, &n);
    if (n) snprintf(s->checkpoint, sizeof s->checkpoint, "%s", v[0]);
    srv_free_list(v, n);
    return n ? 0 : core_fail(err, FM_EINPUT, "--models-dir: %s: no checkpoints (.safetensors, .gguf)", s->c->models_dir);
}

int srv_run(const srv_config *c, volatile sig_atomic_t *stop, fm_error *err)
{
    struct sockaddr_storage ss;
    int v6 = 0, loopback = 0;
    char host[256];
    core_error_clear(err);
    if (parse_listen(c->listen ? c->listen : "127.0.0.1:7860", &ss, &v6, &loopback, host, sizeof host, err)) return err->code;
    if (c->auth && check_auth_list(c->auth, err)) return err->code;
    if (!loopback && !c->auth && !c->insecure_no_auth)
        return core_fail(err, FM_EUSAGE, "--listen: %s is not loopback: give --api-auth USER:PASS (or --insecure-no-auth)", host);
    if (!c->model == !c->models_dir) return core_fail(err, FM_EUSAGE, "--model: give -m MODEL or --models-dir DIR (one of them)");
    if (c->queue < 1 || c->queue > 4096) return core_fail(err, FM_EUSAGE, "--queue: %d is not in 1..4096", c->queue);
    srv_state st = {.c = c, .q_cap = c->queue};
    if (first_checkpoint(&st, err)) return err->code;
    if (!(st.q = calloc((size_t)st.q_cap, sizeof *st.q))) return core_fail(err, FM_EINPUT, "out of memory");
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.work, NULL);
    pthread_cond_init(&st.done, NULL);
    pthread_t worker;
    if (pthread_create(&worker, NULL, srv_worker, &st)) {
        free(st.q);
        return core_fail(err, FM_EINPUT, "cannot start the worker thread");
    }
    http_ctx h = {&st, c, c->body_limit ? c->body_limit : (size_t)64 << 20};
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_ALLOW_UPGRADE | (v6 ? MHD_USE_IPv6 : 0);
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, &h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(c->conn_limit ? c->conn_limit : 64), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)(c->conn_timeout ? c->conn_timeout : 30), MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
        MHD_OPTION_END);
    int rc = 0;
    if (!d) {
        rc = core_fail(err, FM_EINPUT, "--listen: %s: cannot listen (%s)", c->listen ? c->listen : "127.0.0.1:7860",
                       errno ? strerror(errno) : "in use?");
    } else {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        char url[320];
        snprintf(url, sizeof url, v6 ? "http://[%s]:%u/" : "http://%s:%u/", host, di ? di->port : 0);
        if (c->ready) c->ready(c->ready_user, url);
        while (!*stop) sleep_ms(50);
    }
    /* Stop: no new connections; the running job is cancelled at its next
     * step, the queued ones answer 503; the answers are sent (up to 10 s),
     * then the connections close. */
    if (d) MHD_quiesce_daemon(d);
    pthread_mutex_lock(&st.mu);
    st.stopping = 1;
    pthread_cond_broadcast(&st.work);
    pthread_mutex_unlock(&st.mu);
    pthread_join(worker, NULL);
    for (int t = 0; d && t < 200; t++) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (!di || !di->num_connections) break;
        sleep_ms(50);
    }
    if (d) MHD_stop_daemon(d);
    srv_history_free(&st);
    srv_inputs_free(&st);
    free(st.q);
    pthread_mutex_destroy(&st.mu);
    pthread_cond_destroy(&st.work);
    pthread_cond_destroy(&st.done);
    return rc;
}
