/* fmimage serve (issue 21): the server run as a user runs it, on an
 * ephemeral loopback port with the tiny SD 1.x golden model, spoken to over
 * plain sockets. Every A1111 endpoint; the PNG bytes equal the CLI's for
 * the same settings (txt2img, a batch, img2img); the 422s in A1111's
 * (FastAPI's) shape; 404 for every name that leaves its directory (model,
 * override model, LoRA tag; "..", absolute, symlink); body, string and
 * depth limits; Basic auth; the non-loopback refusal; queue-full 503 with
 * Retry-After; interrupt; SIGTERM mid-job exits 0. Plus the parser and
 * helpers of server/ directly. */
#include "cliutil.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "server/server.h"

static char dir[256], models[512], loras[512], saves[512];

typedef struct server {
    pid_t pid;
    int port;
    char err[300];
} server;

static server main_srv;

static int start_server(server *s, const char *const *extra, int expect_ready)
{
    const char *args[40] = {"serve", "--listen", "127.0.0.1:0"};
    int n = 3;
    for (int i = 0; extra[i]; i++) args[n++] = extra[i];
    args[n] = NULL;
    static int k;
    snprintf(s->err, sizeof s->err, "%s/server-%d.err", dir, k++);
    s->pid = cu_spawn(args, NULL, s->err);
    s->port = 0;
    for (int t = 0; t < 600 && expect_ready; t++) { /* 60 s: ASan starts slowly */
        char buf[4096];
        cu_slurp_into(s->err, buf, sizeof buf);
        const char *p = strstr(buf, "serving on http://127.0.0.1:");
        if (p) {
            s->port = atoi(p + strlen("serving on http://127.0.0.1:"));
            return 0;
        }
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) fail_msg("server exited: %s", buf);
        usleep(100000);
    }
    return expect_ready ? -1 : 0;
}

static int stop_server(server *s)
{
    kill(s->pid, SIGTERM);
    return cu_wait(s->pid);
}

/* ---- a small HTTP/1.1 client (Connection: close) ---- */

static int http_send(int port, const char *method, const char *path, const char *headers, const char *body,
                     size_t body_n)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {300, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char head[2048];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n", method,
                      path, headers ? headers : "", body ? body_n : 0);
    assert_int_equal(send(fd, head, (size_t)hn, MSG_NOSIGNAL), hn);
    size_t off = 0;
    while (body && off < body_n) {
        ssize_t w = send(fd, body + off, body_n - off, MSG_NOSIGNAL);
        if (w <= 0) break; /* the server may answer (413) and close before reading it all */
        off += (size_t)w;
    }
    return fd;
}

typedef struct reply {
    int status;
    char *head, *body; /* body points into head's buffer */
} reply;

static reply http_read(int fd)
{
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = recv(fd, buf + n, cap - n - 1, 0)) > 0) {
        n += (size_t)r;
        if (cap - n < 4096) buf = realloc(buf, cap *= 2);
    }
    close(fd);
    buf[n] = 0;
    reply rep = {0, buf, NULL};
    if (sscanf(buf, "HTTP/1.%*d %d", &rep.status) != 1) rep.status = -1;
    char *sep = strstr(buf, "\r\n\r\n");
    rep.body = sep ? sep + 4 : buf + n;
    return rep;
}

static reply http(int port, const char *method, const char *path, const char *body)
{
    return http_read(http_send(port, method, path, NULL, body, body ? strlen(body) : 0));
}

static cJSON *json_of(reply *r)
{
    cJSON *j = cJSON_Parse(r->body);
    if (!j) fail_msg("not JSON (status %d): %.300s", r->status, r->body);
    return j;
}

static uint8_t *b64_decode(const char *s, size_t *n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = strlen(s), k = 0;
    uint8_t *out = malloc(len);
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len && s[i] != '='; i++) {
        const char *p = strchr(t, s[i]);
        assert_non_null(p);
        acc = acc << 6 | (uint32_t)(p - t);
        if ((bits += 6) >= 8) out[k++] = (uint8_t)(acc >> (bits -= 8));
    }
    *n = k;
    return out;
}

static char *b64_encode_file(const char *path)
{
    size_t n = 0;
    uint8_t *d = cu_slurp(path, &n);
    assert_non_null(d);
    char *s = srv_base64_encode(d, n);
    free(d);
    return s;
}

/* Runs the CLI with args into dir/name and returns the file's bytes. */
static uint8_t *cli_png(const char *name, const char *const *args, size_t *n)
{
    char out[400], err[4096];
    snprintf(out, sizeof out, "%s/%s", dir, name);
    const char *argv[40];
    int k = 0;
    for (; args[k]; k++) argv[k] = args[k];
    argv[k++] = "-q";
    argv[k++] = "--force";
    argv[k++] = "-o";
    argv[k++] = out;
    argv[k] = NULL;
    int code = cu_run(argv, err, sizeof err);
    if (code) fail_msg("fmimage exit %d: %s", code, err);
    uint8_t *d = cu_slurp(out, n);
    assert_non_null(d);
    return d;
}

/* POSTs body to path and checks image i equals want byte for byte. */
static cJSON *expect_images(const char *path, const char *body, int count)
{
    reply r = http(main_srv.port, "POST", path, body);
    if (r.status != 200) fail_msg("%s: status %d: %.300s", path, r.status, r.body);
    cJSON *j = json_of(&r);
    free(r.head);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "images")), count);
    return j;
}

static void same_bytes(const cJSON *j, int i, const uint8_t *want, size_t want_n)
{
    size_t n;
    uint8_t *got = b64_decode(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "images"), i)->valuestring, &n);
    printf("  image %d: %zu bytes from the server, %zu from the CLI\n", i, n, want_n);
    assert_int_equal(n, want_n);
    assert_memory_equal(got, want, n);
    free(got);
}

static int setup(void **state)
{
    (void)state;
    char cmd[8192];
    cu_tempdir(dir, sizeof dir, "serve");
    snprintf(models, sizeof models, "%s/models", dir);
    snprintf(loras, sizeof loras, "%s/loras", dir);
    snprintf(saves, sizeof saves, "%s/saves", dir);
    /* models/: two checkpoints (copies: a symlink out would be refused), a
     * symlink escaping the directory; loras/: an adapter and an escaping link */
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s %s %s && cp tests/data/tiny-sd1.safetensors %s/ && "
             "ln -s \"$PWD/tests/data/tiny-sdxl.safetensors\" %s/evil.safetensors && "
             "cp tests/data/lora/sd1_full.safetensors %s/ && ln -s \"$PWD/tests/data/lora/sd1_locon.safetensors\" %s/evilora.safetensors && "
             "echo secret > %s/secret.safetensors",
             models, loras, saves, models, models, loras, loras, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/tiny-sd2.safetensors", models);
    cu_write_tiny_sd2(cmd);
    const char *extra[] = {"--models-dir", models, "--lora-dir", loras, "--queue", "1", "--save-dir", saves, NULL};
    assert_int_equal(start_server(&main_srv, extra, 1), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int code = stop_server(&main_srv);
    char buf[4096];
    cu_slurp_into(main_srv.err, buf, sizeof buf);
    printf("  server exit %d, stderr: %s", code, buf);
    return code;
}

static const char fox[] = "{\"prompt\":\"a red fox in snow\",\"seed\":42,\"width\":64,\"height\":64,"
                          "\"sampler_name\":\"euler\",\"scheduler\":\"normal\",\"steps\":6,\"cfg_scale\":7.5,"
                          "\"unknown_field\":{\"ignored\":[1,2]}}";

static void test_txt2img_equals_cli(void **state)
{
    (void)state;
    const char *args[] = {"-m", "tests/data/tiny-sd1.safetensors", "a red fox in snow", "--seed", "42", "-W", "64",
                          "-H", "64", "--sampler", "euler", "--scheduler", "normal", "--steps", "6", "--cfg", "7.5",
                          NULL};
    size_t n = 0;
    uint8_t *want = cli_png("fox.png", args, &n);
    cJSON *j = expect_images("/sdapi/v1/txt2img", fox, 1);
    same_bytes(j, 0, want, n);
    /* info: A1111's JSON string, with the CLI's infotext */
    cJSON *info = cJSON_Parse(cJSON_GetObjectItem(j, "info")->valuestring);
    assert_non_null(info);
    assert_int_equal(cJSON_GetObjectItem(info, "seed")->valueint, 42);
    assert_string_equal(cJSON_GetObjectItem(info, "sampler_name")->valuestring, "Euler");
    assert_string_equal(cJSON_GetObjectItem(info, "sd_model_name")->valuestring, "tiny-sd1");
    const char *it = cJSON_GetArrayItem(cJSON_GetObjectItem(info, "infotexts"), 0)->valuestring;
    assert_non_null(strstr(it, "Model hash: 60597167c9, Model: tiny-sd1"));
    assert_non_null(cJSON_GetObjectItem(j, "parameters"));
    cJSON_Delete(info);
    cJSON_Delete(j);
    free(want);
}

static void test_batch_and_label_equal_cli(void **state)
{
    (void)state;
    /* A1111: image k of a batch has seed + k; "Euler a" gets Automatic */
    const char *a0[] = {"-m", "tests/data/tiny-sd1.safetensors", "a cat", "-n", "blurry", "--seed", "7", "-W", "64",
                        "-H", "64", "--sampler", "Euler a", "--steps", "5", "--cfg", "5", NULL};
    const char *a1[] = {"-m", "tests/data/tiny-sd1.safetensors", "a cat", "-n", "blurry", "--seed", "8", "-W", "64",
                        "-H", "64", "--sampler", "Euler a", "--steps", "5", "--cfg", "5", NULL};
    size_t n0 = 0, n1 = 0;
    uint8_t *w0 = cli_png("cat0.png", a0, &n0), *w1 = cli_png("cat1.png", a1, &n1);
    cJSON *j = expect_images("/sdapi/v1/txt2img",
                             "{\"prompt\":\"a cat\",\"negative_prompt\":\"blurry\",\"seed\":7,\"width\":64,\"height\":64,"
                             "\"sampler_name\":\"Euler a\",\"steps\":5,\"cfg_scale\":5,\"batch_size\":2}",
                             2);
    same_bytes(j, 0, w0, n0);
    same_bytes(j, 1, w1, n1);
    cJSON_Delete(j);
    free(w0);
    free(w1);
}

/* A white rectangle on black, as a user paints an inpainting mask. */
static void write_mask_png(const char *path, int w, int h)
{
    uint8_t *rgb = calloc((size_t)w * h, 3);
    assert_non_null(rgb);
    for (int y = h / 4; y < h / 2; y++) memset(rgb + ((size_t)y * w + w / 3) * 3, 255, (size_t)(w / 3) * 3);
    fm_error e = {0};
    assert_int_equal(fm_png_write(path, rgb, w, h, NULL, &e), 0);
    free(rgb);
}

/* img2img with a mask: A1111's inpainting fields, and its API defaults
 * (StableDiffusionProcessingImg2Img: blur 4, fill, "Only masked" with 0
 * padding), give the CLI's bytes for the same settings. */
static void test_img2img_inpaint_equals_cli(void **state)
{
    (void)state;
    char mask[400];
    snprintf(mask, sizeof mask, "%s/mask.png", dir);
    write_mask_png(mask, 64, 64);
    const char *whole[] = {"-m", "tests/data/tiny-sd1.safetensors", "a red fox", "--seed", "3", "-W", "64", "-H", "64",
                           "--steps", "6", "-i", "tests/data/e2e.png", "--strength", "0.6", "--mask", mask,
                           "--mask-blur", "2", "--inpaint-fill", "original", "--mask-invert", NULL};
    const char *dflt[] = {"-m", "tests/data/tiny-sd1.safetensors", "a red fox", "--seed", "3", "-W", "64", "-H", "64",
                          "--steps", "6", "-i", "tests/data/e2e.png", "--strength", "0.6", "--mask", mask,
                          "--mask-blur", "4", "--inpaint-fill", "fill", "--inpaint-only-masked", "--inpaint-padding", "0",
                          NULL};
    size_t n1 = 0, n2 = 0;
    uint8_t *want1 = cli_png("inp1.png", whole, &n1), *want2 = cli_png("inp2.png", dflt, &n2);
    char *img = b64_encode_file("tests/data/e2e.png"), *mk = b64_encode_file(mask);
    size_t cap = 2 * (strlen(img) + strlen(mk)) + 1024;
    char *body = malloc(cap);
    snprintf(body, cap, "{\"init_images\":[\"%s\"],\"mask\":\"data:image/png;base64,%s\",\"prompt\":\"a red fox\","
                        "\"seed\":3,\"width\":64,\"height\":64,\"steps\":6,\"denoising_strength\":0.6,\"mask_blur\":2,"
                        "\"inpainting_fill\":1,\"inpaint_full_res\":false,\"inpainting_mask_invert\":1}", img, mk);
    cJSON *j = expect_images("/sdapi/v1/img2img", body, 1);
    same_bytes(j, 0, want1, n1);
    cJSON_Delete(j);
    snprintf(body, cap, "{\"init_images\":[\"%s\"],\"mask\":\"%s\",\"prompt\":\"a red fox\",\"seed\":3,\"width\":64,"
                        "\"height\":64,\"steps\":6,\"denoising_strength\":0.6}", img, mk);
    j = expect_images("/sdapi/v1/img2img", body, 1);
    same_bytes(j, 0, want2, n2);
    cJSON_Delete(j);
    /* refused fields: 422 naming them */
    static const char *const bad[][2] = {{"\"mask_blur_x\":2,\"mask_blur_y\":3", "mask_blur_x"},
                                         {"\"inpainting_fill\":4", "inpainting_fill"},
                                         {"\"inpaint_full_res\":\"maybe\"", "inpaint_full_res"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, cap, "{\"init_images\":[\"%s\"],\"mask\":\"%s\",%s}", img, mk, bad[i][0]);
        reply r = http(main_srv.port, "POST", "/sdapi/v1/img2img", body);
        char loc[64];
        snprintf(loc, sizeof loc, "\"loc\":[\"body\",\"%s\"]", bad[i][1]);
        if (r.status != 422 || !strstr(r.body, loc)) fail_msg("%s: %d %.300s", bad[i][0], r.status, r.body);
        free(r.head);
    }
    snprintf(body, cap, "{\"init_images\":[\"%s\"],\"mask\":\"bm90IGFuIGltYWdl\"}", img);
    reply r = http(main_srv.port, "POST", "/sdapi/v1/img2img", body);
    if (r.status != 422 || !strstr(r.body, "mask")) fail_msg("bad mask: %d %.300s", r.status, r.body);
    free(r.head);
    free(body);
    free(img);
    free(mk);
    free(want1);
    free(want2);
}

/* txt2img with enable_hr: A1111's hires-fix fields (and its API defaults:
 * hr_scale 2, denoising_strength 0.75, the Latent upscaler) give the CLI's
 * bytes for the same settings. */
static void test_txt2img_hires_equals_cli(void **state)
{
    (void)state;
    const char *given[] = {"-m", "tests/data/tiny-sd1.safetensors", "a red fox", "--seed", "5", "-W", "64", "-H", "64",
                           "--steps", "4", "--hires-width", "96", "--hires-upscaler", "Latent (bicubic antialiased)",
                           "--hires-steps", "3", "--hires-denoise", "0.6", "--hires-sampler", "Euler",
                           "--hires-prompt", "a blue fox", NULL};
    const char *dflt[] = {"-m", "tests/data/tiny-sd1.safetensors", "a red fox", "--seed", "5", "-W", "64", "-H", "64",
                          "--steps", "4", "--hires-scale", "2", "--hires-denoise", "0.75", NULL};
    size_t n1 = 0, n2 = 0;
    uint8_t *want1 = cli_png("hr1.png", given, &n1), *want2 = cli_png("hr2.png", dflt, &n2);
    cJSON *j = expect_images("/sdapi/v1/txt2img",
                             "{\"prompt\":\"a red fox\",\"seed\":5,\"width\":64,\"height\":64,\"steps\":4,"
                             "\"enable_hr\":true,\"hr_resize_x\":96,\"hr_upscaler\":\"Latent (bicubic antialiased)\","
                             "\"hr_second_pass_steps\":3,\"denoising_strength\":0.6,\"hr_sampler_name\":\"Euler\","
                             "\"hr_prompt\":\"a blue fox\"}",
                             1);
    same_bytes(j, 0, want1, n1);
    cJSON_Delete(j);
    j = expect_images("/sdapi/v1/txt2img",
                      "{\"prompt\":\"a red fox\",\"seed\":5,\"width\":64,\"height\":64,\"steps\":4,\"enable_hr\":true}", 1);
    same_bytes(j, 0, want2, n2);
    cJSON_Delete(j);
    /* enable_hr false ignores the hr_ fields, as A1111 */
    j = expect_images("/sdapi/v1/txt2img",
                      "{\"prompt\":\"a red fox\",\"seed\":5,\"width\":64,\"height\":64,\"steps\":4,\"enable_hr\":false,"
                      "\"hr_scale\":3}", 1);
    cJSON *w = cJSON_GetObjectItem(j, "info");
    assert_non_null(w);
    cJSON_Delete(j);
    reply r = http(main_srv.port, "POST", "/sdapi/v1/txt2img", "{\"enable_hr\":true,\"hr_scale\":0}");
    if (r.status != 422 || !strstr(r.body, "hr_scale")) fail_msg("hr_scale 0: %d %.300s", r.status, r.body);
    free(r.head);
    r = http(main_srv.port, "POST", "/sdapi/v1/txt2img", "{\"enable_hr\":true,\"hr_upscaler\":\"R-ESRGAN 4x+\",\"width\":64,\"height\":64}");
    if (r.status != 422) fail_msg("unknown upscaler: %d %.300s", r.status, r.body);
    free(r.head);
    free(want1);
    free(want2);
}

static void test_img2img_equals_cli(void **state)
{
    (void)state;
    const char *args[] = {"-m", "tests/data/tiny-sd1.safetensors", "a red fox", "--seed", "3", "-W", "64", "-H",
                          "64", "--steps", "6", "-i", "tests/data/e2e.png", "--strength", "0.5", NULL};
    size_t n = 0;
    uint8_t *want = cli_png("i2i.png", args, &n);
    char *img = b64_encode_file("tests/data/e2e.png");
    size_t cap = 2 * strlen(img) + 512;
    char *body = malloc(cap);
    snprintf(body, cap, "{\"init_images\":[\"data:image/png;base64,%s\"],\"prompt\":\"a red fox\",\"seed\":3,"
                        "\"width\":64,\"height\":64,\"steps\":6,\"denoising_strength\":0.5}", img);
    cJSON *j = expect_images("/sdapi/v1/img2img", body, 1);
    same_bytes(j, 0, want, n);
    cJSON_Delete(j);
    /* no init image: 422 */
    reply r = http(main_srv.port, "POST", "/sdapi/v1/img2img", "{\"prompt\":\"x\"}");
    assert_int_equal(r.status, 422);
    free(r.head);
    r = http(main_srv.port, "POST", "/sdapi/v1/img2img", "{\"init_images\":[\"bm90IGFuIGltYWdl\"]}");
    assert_int_equal(r.status, 422);
    free(r.head);
    free(body);
    free(img);
    free(want);
}

static void expect_get_array(const char *path, const char *key, const char *value)
{
    reply r = http(main_srv.port, "GET", path, NULL);
    assert_int_equal(r.status, 200);
    cJSON *j = json_of(&r), *e;
    int found = 0;
    assert_true(cJSON_IsArray(j));
    cJSON_ArrayForEach(e, j)
    {
        const cJSON *v = cJSON_GetObjectItem(e, key);
        if (cJSON_IsString(v) && !strcmp(v->valuestring, value)) found = 1;
    }
    if (!found) fail_msg("%s: no %s = %s in %.400s", path, key, value, r.body);
    cJSON_Delete(j);
    free(r.head);
}

static void test_listing_endpoints(void **state)
{
    (void)state;
    expect_get_array("/sdapi/v1/samplers", "name", "Euler a");
    expect_get_array("/sdapi/v1/samplers", "name", "DPM++ 2M");
    expect_get_array("/sdapi/v1/schedulers", "name", "karras");
    expect_get_array("/sdapi/v1/schedulers", "label", "Automatic");
    expect_get_array("/sdapi/v1/sd-models", "model_name", "tiny-sd1");
    expect_get_array("/sdapi/v1/sd-models", "filename", "tiny-sd2.safetensors");
    expect_get_array("/sdapi/v1/loras", "name", "sd1_full");
    expect_get_array("/sdapi/v1/upscalers", "name", "None");
    expect_get_array("/sdapi/v1/upscalers", "name", "Lanczos");
    expect_get_array("/sdapi/v1/latent-upscale-modes", "name", "Latent (bicubic antialiased)");
    /* the escaping symlinks are not listed, and no absolute path is shown */
    reply r = http(main_srv.port, "GET", "/sdapi/v1/sd-models", NULL);
    assert_null(strstr(r.body, "evil"));
    assert_null(strstr(r.body, dir));
    free(r.head);
    r = http(main_srv.port, "GET", "/sdapi/v1/loras", NULL);
    assert_null(strstr(r.body, "evilora"));
    free(r.head);
    r = http(main_srv.port, "GET", "/sdapi/v1/embeddings", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"loaded\""));
    free(r.head);
    r = http(main_srv.port, "GET", "/sdapi/v1/progress", NULL);
    assert_int_equal(r.status, 200);
    cJSON *p = json_of(&r);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(p, "progress")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(p, "eta_relative")));
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(p, "state")));
    cJSON_Delete(p);
    free(r.head);
    r = http(main_srv.port, "POST", "/sdapi/v1/refresh-checkpoints", "");
    assert_int_equal(r.status, 200);
    free(r.head);
    r = http(main_srv.port, "GET", "/sdapi/v1/no-such-thing", NULL);
    assert_int_equal(r.status, 404);
    free(r.head);
    r = http(main_srv.port, "GET", "/", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "<button id=\"generate\">"));
    free(r.head);
}

static void test_png_info(void **state)
{
    (void)state;
    char fox_png[400];
    snprintf(fox_png, sizeof fox_png, "%s/fox.png", dir); /* the CLI's, from test_txt2img_equals_cli */
    char *img = b64_encode_file(fox_png);
    size_t cap = strlen(img) + 64;
    char *body = malloc(cap);
    snprintf(body, cap, "{\"image\":\"%s\"}", img);
    reply r = http(main_srv.port, "POST", "/sdapi/v1/png-info", body);
    assert_int_equal(r.status, 200);
    cJSON *j = json_of(&r);
    char *want = cu_png_parameters(fox_png);
    assert_non_null(want);
    assert_string_equal(cJSON_GetObjectItem(j, "info")->valuestring, want);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "items"), "parameters")->valuestring, want);
    free(want);
    cJSON_Delete(j);
    free(r.head);
    r = http(main_srv.port, "POST", "/sdapi/v1/png-info", "{\"image\":5}");
    assert_int_equal(r.status, 422);
    free(r.head);
    free(body);
    free(img);
}

static void test_options_switch_model(void **state)
{
    (void)state;
    reply r = http(main_srv.port, "POST", "/sdapi/v1/options", "{\"sd_model_checkpoint\":\"tiny-sd2.safetensors\",\"x\":1}");
    assert_int_equal(r.status, 200);
    free(r.head);
    r = http(main_srv.port, "GET", "/sdapi/v1/options", NULL);
    cJSON *j = json_of(&r);
    const char *ck = cJSON_GetObjectItem(j, "sd_model_checkpoint")->valuestring;
    printf("  sd_model_checkpoint: %s\n", ck);
    assert_int_equal(strncmp(ck, "tiny-sd2.safetensors [", 22), 0);
    cJSON_Delete(j);
    free(r.head);
    j = expect_images("/sdapi/v1/txt2img", "{\"prompt\":\"x\",\"seed\":1,\"steps\":2,\"width\":64,\"height\":64}", 1);
    cJSON *info = cJSON_Parse(cJSON_GetObjectItem(j, "info")->valuestring);
    assert_string_equal(cJSON_GetObjectItem(info, "sd_model_name")->valuestring, "tiny-sd2");
    cJSON_Delete(info);
    cJSON_Delete(j);
    /* override_settings picks a model for one request */
    j = expect_images("/sdapi/v1/txt2img", "{\"prompt\":\"x\",\"seed\":1,\"steps\":2,\"width\":64,\"height\":64,"
                                           "\"override_settings\":{\"sd_model_checkpoint\":\"tiny-sd1\"}}", 1);
    info = cJSON_Parse(cJSON_GetObjectItem(j, "info")->valuestring);
    assert_string_equal(cJSON_GetObjectItem(info, "sd_model_name")->valuestring, "tiny-sd1");
    cJSON_Delete(info);
    cJSON_Delete(j);
    r = http(main_srv.port, "POST", "/sdapi/v1/options", "{\"sd_model_checkpoint\":\"tiny-sd1.safetensors\"}");
    assert_int_equal(r.status, 200);
    free(r.head);
}

static void test_names_stay_inside(void **state)
{
    (void)state;
    static const char *const bad[] = {"../secret.safetensors", "../models/../secret.safetensors",
                                      "/etc/passwd", "evil.safetensors", "evil", "..", "", NULL};
    char body[512];
    for (int i = 0; bad[i]; i++) {
        snprintf(body, sizeof body, "{\"sd_model_checkpoint\":\"%s\"}", bad[i]);
        reply r = http(main_srv.port, "POST", "/sdapi/v1/options", body);
        if (bad[i][0] && r.status != 404) fail_msg("options %s: %d", bad[i], r.status);
        free(r.head);
        snprintf(body, sizeof body, "{\"prompt\":\"x\",\"steps\":1,\"width\":64,\"height\":64,"
                                    "\"override_settings\":{\"sd_model_checkpoint\":\"%s\"}}", bad[i]);
        r = http(main_srv.port, "POST", "/sdapi/v1/txt2img", body);
        if (bad[i][0] && r.status != 404) fail_msg("override %s: %d %s", bad[i], r.status, r.body);
        free(r.head);
    }
    static const char *const tags[] = {"../secret", "../loras/sd1_full", "evilora", "/etc/passwd", "nosuch", NULL};
    for (int i = 0; tags[i]; i++) {
        snprintf(body, sizeof body, "{\"prompt\":\"x <lora:%s:1>\",\"steps\":1,\"width\":64,\"height\":64}", tags[i]);
        reply r = http(main_srv.port, "POST", "/sdapi/v1/txt2img", body);
        if (r.status != 404) fail_msg("lora %s: %d %s", tags[i], r.status, r.body);
        free(r.head);
    }
    /* a LoRA inside the directory works */
    cJSON *j = expect_images("/sdapi/v1/txt2img",
                             "{\"prompt\":\"x <lora:sd1_full:0.5>\",\"steps\":1,\"width\":64,\"height\":64,\"seed\":1}", 1);
    cJSON *info = cJSON_Parse(cJSON_GetObjectItem(j, "info")->valuestring);
    assert_non_null(strstr(cJSON_GetArrayItem(cJSON_GetObjectItem(info, "infotexts"), 0)->valuestring, "Lora hashes"));
    cJSON_Delete(info);
    cJSON_Delete(j);
}

static void expect_422(const char *body, const char *field)
{
    reply r = http(main_srv.port, "POST", "/sdapi/v1/txt2img", body);
    if (r.status != 422) fail_msg("%s: status %d, not 422: %.300s", body, r.status, r.body);
    cJSON *j = json_of(&r);
    cJSON *d = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "detail"), 0);
    assert_non_null(d);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(d, "msg")));
    cJSON *loc = cJSON_GetObjectItem(d, "loc");
    assert_string_equal(cJSON_GetArrayItem(loc, 0)->valuestring, "body");
    if (field) assert_string_equal(cJSON_GetArrayItem(loc, 1)->valuestring, field);
    cJSON_Delete(j);
    free(r.head);
}

static void test_422(void **state)
{
    (void)state;
    expect_422("{\"steps\":\"many\"}", "steps");
    expect_422("{\"steps\":[1]}", "steps");
    expect_422("{\"cfg_scale\":{}}", "cfg_scale");
    expect_422("{\"prompt\":5}", "prompt");
    expect_422("{\"negative_prompt\":true}", "negative_prompt");
    expect_422("{\"width\":\"abc\"}", "width");
    expect_422("{\"seed\":-5}", "seed");
    expect_422("{\"seed\":99999999999}", "seed");
    expect_422("{\"batch_size\":17}", "batch_size");
    expect_422("{\"batch_size\":4,\"n_iter\":5}", "batch_size");
    expect_422("{\"sampler_name\":7}", "sampler_name");
    expect_422("{\"override_settings\":[]}", "override_settings");
    expect_422("[1,2]", NULL);
    expect_422("{not json", NULL);
    /* the CLI's limits (fm_params_check) */
    expect_422("{\"width\":65,\"height\":64,\"steps\":1}", NULL);
    expect_422("{\"width\":64,\"height\":64,\"steps\":1001}", NULL);
    expect_422("{\"width\":99999,\"height\":64,\"steps\":1}", NULL);
    expect_422("{\"width\":64,\"height\":64,\"steps\":1,\"sampler_name\":\"nosuch\"}", NULL);
}

static void test_limits(void **state)
{
    (void)state;
    /* nesting deeper than 32: 400 */
    char deep[512] = "{\"a\":";
    for (int i = 0; i < 100; i++) strcat(deep, "[");
    static const char *const bodies[] = {"/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/options",
                                         "/sdapi/v1/png-info", "/prompt"};
    reply r;
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        r = http(main_srv.port, "POST", bodies[i], deep);
        if (r.status != 400) fail_msg("%s, nested 100 deep: %d %.200s", bodies[i], r.status, r.body);
        free(r.head);
    }
    /* a 2 MiB prompt: 413 (strings are limited to 1 MiB) */
    size_t n = (2u << 20) + 64;
    char *big = malloc(n);
    memset(big, 'a', n);
    memcpy(big, "{\"prompt\":\"", 11);
    strcpy(big + n - 3, "\"}");
    r = http(main_srv.port, "POST", "/sdapi/v1/txt2img", big);
    assert_int_equal(r.status, 413);
    free(r.head);
    free(big);
    /* any route's body over the limit (65 MiB, announced): 413 before it is read */
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char h[256];
        int hn = snprintf(h, sizeof h, "POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 68157440\r\n\r\n{",
                          bodies[i]);
        int cfd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)main_srv.port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(connect(cfd, (struct sockaddr *)&sa, sizeof sa), 0);
        assert_int_equal(send(cfd, h, (size_t)hn, MSG_NOSIGNAL), hn);
        r = http_read(cfd);
        if (r.status != 413) fail_msg("%s, 65 MiB announced: %d", bodies[i], r.status);
        free(r.head);
    }
    /* a body over the limit (65 MiB, announced): 413 before it is read */
    char head[] = "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 68157440\r\n\r\n{";
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)main_srv.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(send(fd, head, sizeof head - 1, MSG_NOSIGNAL), (ssize_t)(sizeof head - 1));
    r = http_read(fd);
    assert_int_equal(r.status, 413);
    free(r.head);
}

static void test_limits_chunked_body(void **state)
{
    (void)state;
    /* a body without Content-Length (chunked) over --body-limit 1 MiB: 413 after reading */
    server s;
    const char *extra[] = {"-m", "tests/data/tiny-sd1.safetensors", "--body-limit", "1", NULL};
    assert_int_equal(start_server(&s, extra, 1), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char head[] = "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    send(fd, head, sizeof head - 1, MSG_NOSIGNAL);
    static char chunk[65536 + 16];
    int hn = snprintf(chunk, sizeof chunk, "10000\r\n");
    memset(chunk + hn, 'a', 65536);
    memcpy(chunk + hn + 65536, "\r\n", 2);
    for (int i = 0; i < 20; i++) send(fd, chunk, (size_t)hn + 65538, MSG_NOSIGNAL);
    send(fd, "0\r\n\r\n", 5, MSG_NOSIGNAL);
    reply r = http_read(fd);
    assert_int_equal(r.status, 413);
    free(r.head);
    kill(s.pid, SIGINT); /* SIGINT stops it as SIGTERM does: exit 0 */
    assert_int_equal(cu_wait(s.pid), 0);
}

static void test_auth(void **state)
{
    (void)state;
    server s;
    const char *extra[] = {"-m", "tests/data/tiny-sd1.safetensors", "--api-auth", "alice:s3cret,bob:pw", NULL};
    assert_int_equal(start_server(&s, extra, 1), 0);
    reply r = http(s.port, "GET", "/sdapi/v1/options", NULL);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.head, "WWW-Authenticate: Basic"));
    free(r.head);
    /* alice:wrong, alice:s3cre, then bob:pw */
    r = http_read(http_send(s.port, "GET", "/sdapi/v1/options", "Authorization: Basic YWxpY2U6d3Jvbmc=\r\n", NULL, 0));
    assert_int_equal(r.status, 401);
    free(r.head);
    r = http_read(http_send(s.port, "GET", "/sdapi/v1/options", "Authorization: Basic YWxpY2U6czNjcmU=\r\n", NULL, 0));
    assert_int_equal(r.status, 401);
    free(r.head);
    r = http_read(http_send(s.port, "GET", "/", "Authorization: Basic Ym9iOnB3\r\n", NULL, 0));
    assert_int_equal(r.status, 200);
    free(r.head);
    /* every route asks: generation, listings, ComfyUI, the page, with no or a wrong header */
    static const char *const routes[][2] = {{"POST", "/sdapi/v1/txt2img"}, {"POST", "/sdapi/v1/img2img"},
                                            {"GET", "/sdapi/v1/progress"}, {"GET", "/sdapi/v1/embeddings"},
                                            {"POST", "/sdapi/v1/options"}, {"POST", "/sdapi/v1/png-info"},
                                            {"POST", "/prompt"}, {"GET", "/view?filename=x.png"}, {"GET", "/"}};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const char *body = routes[i][0][0] == 'P' ? "{\"prompt\":\"x\",\"steps\":1}" : NULL;
        r = http_read(http_send(s.port, routes[i][0], routes[i][1], NULL, body, body ? strlen(body) : 0));
        if (r.status != 401) fail_msg("%s %s without auth: %d", routes[i][0], routes[i][1], r.status);
        free(r.head);
        r = http_read(http_send(s.port, routes[i][0], routes[i][1], "Authorization: Basic Ym9iOnB3eA==\r\n", body,
                                body ? strlen(body) : 0)); /* bob:pwx */
        if (r.status != 401) fail_msg("%s %s with a wrong password: %d", routes[i][0], routes[i][1], r.status);
        free(r.head);
    }
    r = http_read(http_send(s.port, "GET", "/sdapi/v1/options", "Authorization: Basic YWxpY2U6czNjcmV0\r\n", NULL, 0));
    assert_int_equal(r.status, 200);
    free(r.head);
    assert_int_equal(stop_server(&s), 0);
    /* not loopback without auth: refused with one line, exit 2 */
    const char *open_[] = {"serve", "--listen", "0.0.0.0:0", "-m", "tests/data/tiny-sd1.safetensors", NULL};
    char err[4096];
    assert_int_equal(cu_run(open_, err, sizeof err), 2);
    printf("  %s", err);
    assert_non_null(strstr(err, "is not loopback"));
    assert_int_equal(strchr(err, '\n') - err + 1, (long)strlen(err));
    const char *bad_auth[] = {"serve", "-m", "tests/data/tiny-sd1.safetensors", "--api-auth", "nocolon", NULL};
    assert_int_equal(cu_run(bad_auth, err, sizeof err), 2);
}

static void test_cors(void **state)
{
    (void)state;
    /* off by default */
    reply r = http_read(http_send(main_srv.port, "GET", "/sdapi/v1/options", "Origin: http://a.example\r\n", NULL, 0));
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.head, "Access-Control-Allow-Origin"));
    free(r.head);
    server s;
    const char *extra[] = {"-m", "tests/data/tiny-sd1.safetensors", "--cors-allow-origins", "http://a.example,http://c.example", NULL};
    assert_int_equal(start_server(&s, extra, 1), 0);
    r = http_read(http_send(s.port, "GET", "/sdapi/v1/options", "Origin: http://c.example\r\n", NULL, 0));
    assert_non_null(strstr(r.head, "Access-Control-Allow-Origin: http://c.example"));
    free(r.head);
    r = http_read(http_send(s.port, "GET", "/sdapi/v1/options", "Origin: http://b.example\r\n", NULL, 0));
    assert_null(strstr(r.head, "Access-Control-Allow-Origin"));
    free(r.head);
    r = http_read(http_send(s.port, "OPTIONS", "/sdapi/v1/txt2img", "Origin: http://a.example\r\n", NULL, 0));
    assert_int_equal(r.status, 204);
    assert_non_null(strstr(r.head, "Access-Control-Allow-Methods"));
    free(r.head);
    assert_int_equal(stop_server(&s), 0);
}

static double progress_of(int port, int *busy)
{
    reply r = http(port, "GET", "/sdapi/v1/progress", NULL);
    cJSON *j = json_of(&r);
    double p = cJSON_GetObjectItem(j, "progress")->valuedouble;
    *busy = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "state"), "sampling_steps")->valueint > 0;
    cJSON_Delete(j);
    free(r.head);
    return p;
}

static const char slow[] = "{\"prompt\":\"slow\",\"steps\":1000,\"width\":64,\"height\":64,\"seed\":1}";

static void wait_busy(int port)
{
    int busy = 0;
    for (int t = 0; t < 600 && !busy; t++) {
        progress_of(port, &busy);
        if (!busy) usleep(50000);
    }
    assert_true(busy);
}

static void test_queue_full_and_interrupt(void **state)
{
    (void)state;
    /* --queue 1: one job runs, one waits, the third is a 503 */
    int a = http_send(main_srv.port, "POST", "/sdapi/v1/txt2img", NULL, slow, strlen(slow));
    wait_busy(main_srv.port);
    int b = http_send(main_srv.port, "POST", "/sdapi/v1/txt2img", NULL, fox, strlen(fox));
    /* once b waits in the queue (job_count 2), the queue is full: c is refused */
    int jobs = 0;
    for (int t = 0; t < 600 && jobs != 2; t++) {
        reply pr = http(main_srv.port, "GET", "/sdapi/v1/progress", NULL);
        cJSON *pj = json_of(&pr);
        jobs = cJSON_GetObjectItem(cJSON_GetObjectItem(pj, "state"), "job_count")->valueint;
        cJSON_Delete(pj);
        free(pr.head);
        if (jobs != 2) usleep(20000);
    }
    assert_int_equal(jobs, 2);
    reply c = http(main_srv.port, "POST", "/sdapi/v1/txt2img", fox);
    assert_int_equal(c.status, 503);
    assert_non_null(strstr(c.head, "Retry-After:"));
    free(c.head);
    int busy;
    double p = progress_of(main_srv.port, &busy);
    printf("  progress while the slow job runs: %.3f\n", p);
    reply r = http(main_srv.port, "POST", "/sdapi/v1/interrupt", "");
    assert_int_equal(r.status, 200);
    free(r.head);
    r = http_read(a); /* interrupted: 200 without images, as A1111 */
    assert_int_equal(r.status, 200);
    cJSON *j = json_of(&r);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "images")), 0);
    cJSON_Delete(j);
    free(r.head);
    r = http_read(b); /* the queued one still runs */
    assert_int_equal(r.status, 200);
    free(r.head);
    r = http(main_srv.port, "POST", "/sdapi/v1/skip", "");
    assert_int_equal(r.status, 200);
    free(r.head);
}

static void test_disconnect_frees_the_slot(void **state)
{
    (void)state;
    /* a client that hangs up cancels its job: running (a) and queued (b) */
    int a = http_send(main_srv.port, "POST", "/sdapi/v1/txt2img", NULL, slow, strlen(slow));
    wait_busy(main_srv.port);
    int b = http_send(main_srv.port, "POST", "/sdapi/v1/txt2img", NULL, slow, strlen(slow));
    usleep(300000);
    close(b);
    close(a);
    int busy = 1;
    for (int t = 0; t < 200 && busy; t++) {
        reply pr = http(main_srv.port, "GET", "/sdapi/v1/progress", NULL);
        cJSON *pj = json_of(&pr);
        busy = cJSON_GetObjectItem(cJSON_GetObjectItem(pj, "state"), "job_count")->valueint;
        cJSON_Delete(pj);
        free(pr.head);
        if (busy) usleep(50000);
    }
    assert_int_equal(busy, 0);
    /* the queue takes work again at once */
    cJSON *j = expect_images("/sdapi/v1/txt2img", fox, 1);
    cJSON_Delete(j);
}

static void test_save_dir_complete_pngs(void **state)
{
    (void)state;
    char cmd[2048], out[4096];
    /* every file in --save-dir is a whole PNG with its parameters */
    snprintf(cmd, sizeof cmd, "ls %s | grep -c '\\.png$'; ls -a %s | grep -c tmp", saves, saves);
    tu_run_capture(cmd, out, sizeof out);
    printf("  save dir: %s", out);
    assert_true(atoi(out) >= 1);
    assert_int_equal(atoi(strchr(out, '\n') + 1), 0);
}

static void test_sigterm_mid_job_exits_0(void **state)
{
    (void)state;
    server s;
    const char *extra[] = {"-m", "tests/data/tiny-sd1.safetensors", NULL};
    assert_int_equal(start_server(&s, extra, 1), 0);
    int a = http_send(s.port, "POST", "/sdapi/v1/txt2img", NULL, slow, strlen(slow));
    wait_busy(s.port);
    kill(s.pid, SIGTERM);
    reply r = http_read(a);
    printf("  the running request got %d when the server stopped\n", r.status);
    assert_true(r.status == 200 || r.status == 503);
    free(r.head);
    assert_int_equal(cu_wait(s.pid), 0);
}

/* ---- ComfyUI ---- */

/* ComfyUI's default workflow (API format), the checkpoint, seed and text
 * filled in; link_vae is the VAEDecode's vae link. */
static void comfy_workflow(char *buf, size_t n, const char *ckpt, const char *ks_type, const char *link_vae)
{
    snprintf(buf, n,
             "{\"client_id\":\"t\",\"prompt\":{"
             "\"3\":{\"class_type\":\"%s\",\"inputs\":{\"seed\":42,\"steps\":6,\"cfg\":7.5,\"sampler_name\":\"euler\","
             "\"scheduler\":\"normal\",\"denoise\":1,\"model\":[\"4\",0],\"positive\":[\"6\",0],\"negative\":[\"7\",0],"
             "\"latent_image\":[\"5\",0]}},"
             "\"4\":{\"class_type\":\"CheckpointLoaderSimple\",\"inputs\":{\"ckpt_name\":\"%s\"}},"
             "\"5\":{\"class_type\":\"EmptyLatentImage\",\"inputs\":{\"width\":64,\"height\":64,\"batch_size\":1}},"
             "\"6\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"a red fox in snow\",\"clip\":[\"4\",1]}},"
             "\"7\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"blurry\",\"clip\":[\"4\",1]}},"
             "\"8\":{\"class_type\":\"VAEDecode\",\"inputs\":{\"samples\":[\"3\",0],\"vae\":%s}},"
             "\"9\":{\"class_type\":\"SaveImage\",\"inputs\":{\"filename_prefix\":\"ComfyUI\",\"images\":[\"8\",0]}}}}",
             ks_type, ckpt, link_vae);
}

static void test_comfy_default_workflow_equals_cli(void **state)
{
    (void)state;
    char wf[4096], path[256];
    comfy_workflow(wf, sizeof wf, "tiny-sd1.safetensors", "KSampler", "[\"4\",2]");
    reply r = http(main_srv.port, "POST", "/prompt", wf);
    if (r.status != 200) fail_msg("/prompt: %d %s", r.status, r.body);
    cJSON *j = json_of(&r);
    char id[64];
    snprintf(id, sizeof id, "%s", cJSON_GetObjectItem(j, "prompt_id")->valuestring);
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(j, "node_errors")));
    cJSON_Delete(j);
    free(r.head);
    /* poll the history until it is there */
    snprintf(path, sizeof path, "/history/%s", id);
    cJSON *h = NULL, *entry = NULL;
    for (int t = 0; t < 600 && !entry; t++) {
        r = http(main_srv.port, "GET", path, NULL);
        h = json_of(&r);
        free(r.head);
        if (!(entry = cJSON_GetObjectItem(h, id))) { cJSON_Delete(h); usleep(50000); }
    }
    assert_non_null(entry);
    cJSON *st = cJSON_GetObjectItem(entry, "status");
    assert_string_equal(cJSON_GetObjectItem(st, "status_str")->valuestring, "success");
    cJSON *im = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(entry, "outputs"), "9"), "images"), 0);
    assert_non_null(im);
    snprintf(path, sizeof path, "/view?filename=%s&subfolder=&type=output", cJSON_GetObjectItem(im, "filename")->valuestring);
    cJSON_Delete(h);
    r = http(main_srv.port, "GET", path, NULL);
    assert_int_equal(r.status, 200);
    const char *cl = strstr(r.head, "Content-Length: ");
    assert_non_null(cl);
    size_t n = (size_t)atol(cl + 16), want_n = 0;
    /* ComfyUI's noise is PyTorch's CPU generator: fmimage --rng cpu */
    const char *args[] = {"-m", "tests/data/tiny-sd1.safetensors", "a red fox in snow", "-n", "blurry", "--seed", "42",
                          "-W", "64", "-H", "64", "--sampler", "euler", "--scheduler", "normal", "--steps", "6", "--cfg",
                          "7.5", "--rng", "cpu", NULL};
    uint8_t *want = cli_png("comfy.png", args, &want_n);
    printf("  ComfyUI /view: %zu bytes, the CLI (--rng cpu): %zu\n", n, want_n);
    assert_int_equal(n, want_n);
    assert_memory_equal(r.body, want, n);
    free(want);
    free(r.head);
    r = http(main_srv.port, "GET", "/queue", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"queue_running\":[]"));
    assert_non_null(strstr(r.body, "\"queue_pending\":[]"));
    free(r.head);
    r = http(main_srv.port, "GET", "/history", NULL);
    assert_non_null(strstr(r.body, id));
    free(r.head);
    r = http(main_srv.port, "GET", "/object_info", NULL);
    assert_int_equal(r.status, 200);
    j = json_of(&r);
    cJSON *ks = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "KSampler"), "input"), "required");
    assert_non_null(cJSON_GetObjectItem(ks, "sampler_name"));
    assert_non_null(cJSON_GetObjectItem(j, "SaveImage"));
    cJSON_Delete(j);
    free(r.head);
    r = http(main_srv.port, "POST", "/interrupt", "");
    assert_int_equal(r.status, 200);
    free(r.head);
}

static void test_comfy_errors(void **state)
{
    (void)state;
    char wf[4096];
    /* unknown node type: 400 invalid_prompt */
    comfy_workflow(wf, sizeof wf, "tiny-sd1.safetensors", "KSamplerTurbo", "[\"4\",2]");
    reply r = http(main_srv.port, "POST", "/prompt", wf);
    assert_int_equal(r.status, 400);
    cJSON *j = json_of(&r);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "type")->valuestring, "invalid_prompt");
    cJSON_Delete(j);
    free(r.head);
    /* a link to the wrong output type, a link to a missing node, a malformed link: node_errors */
    static const char *const links[] = {"[\"4\",1]", "[\"99\",0]", "[\"4\"]", "5", NULL};
    for (int i = 0; links[i]; i++) {
        comfy_workflow(wf, sizeof wf, "tiny-sd1.safetensors", "KSampler", links[i]);
        r = http(main_srv.port, "POST", "/prompt", wf);
        if (r.status != 400) fail_msg("link %s: %d", links[i], r.status);
        j = json_of(&r);
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "type")->valuestring,
                            "prompt_outputs_failed_validation");
        assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "node_errors"), "8"));
        cJSON_Delete(j);
        free(r.head);
    }
    /* no output node */
    r = http(main_srv.port, "POST", "/prompt", "{\"prompt\":{\"4\":{\"class_type\":\"CheckpointLoaderSimple\",\"inputs\":{}}}}");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "prompt_no_outputs"));
    free(r.head);
    r = http(main_srv.port, "POST", "/prompt", "{\"prompt\":5}");
    assert_int_equal(r.status, 400);
    free(r.head);
    /* names outside the directory: 404 */
    static const char *const bad[] = {"../secret.safetensors", "/etc/passwd", "evil.safetensors", NULL};
    for (int i = 0; bad[i]; i++) {
        comfy_workflow(wf, sizeof wf, bad[i], "KSampler", "[\"4\",2]");
        r = http(main_srv.port, "POST", "/prompt", wf);
        if (r.status != 404) fail_msg("ckpt_name %s: %d", bad[i], r.status);
        free(r.head);
    }
    static const char *const views[] = {"/view?filename=../secret.safetensors", "/view?filename=%2Fetc%2Fpasswd",
                                        "/view?filename=fmimage_00000000_00001_.png", "/view", NULL};
    for (int i = 0; views[i]; i++) {
        r = http(main_srv.port, "GET", views[i], NULL);
        if (r.status != 404) fail_msg("%s: %d", views[i], r.status);
        free(r.head);
    }
}

/* ComfyUI graphs for the other nodes: "3" is the sampler, "4" the
 * checkpoint, "5" the latent, "6"/"7" the texts (clip from `clip`), "8"
 * VAEDecode, "9" SaveImage, plus `extra` nodes ("" or ",\"10\":{...}"). */
static void comfy_graph(char *buf, size_t n, const char *sampler, const char *latent, const char *clip, const char *extra)
{
    snprintf(buf, n,
             "{\"prompt\":{\"3\":%s,\"5\":%s,"
             "\"4\":{\"class_type\":\"CheckpointLoaderSimple\",\"inputs\":{\"ckpt_name\":\"tiny-sd1.safetensors\"}},"
             "\"6\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"a red fox in snow\",\"clip\":%s}},"
             "\"7\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"blurry\",\"clip\":%s}},"
             "\"8\":{\"class_type\":\"VAEDecode\",\"inputs\":{\"samples\":[\"3\",0],\"vae\":[\"4\",2]}},"
             "\"9\":{\"class_type\":\"SaveImage\",\"inputs\":{\"filename_prefix\":\"x\",\"images\":[\"8\",0]}}%s}}",
             sampler, latent, clip, clip, extra);
}

#define KS(model, denoise) \
    "{\"class_type\":\"KSampler\",\"inputs\":{\"seed\":42,\"steps\":6,\"cfg\":7.5,\"sampler_name\":\"euler\"," \
    "\"scheduler\":\"normal\",\"denoise\":" denoise ",\"model\":" model ",\"positive\":[\"6\",0]," \
    "\"negative\":[\"7\",0],\"latent_image\":[\"5\",0]}}"
#define KSA(add, steps, start, end, left) \
    "{\"class_type\":\"KSamplerAdvanced\",\"inputs\":{\"add_noise\":\"" add "\",\"noise_seed\":42,\"steps\":" steps "," \
    "\"cfg\":7.5,\"sampler_name\":\"euler\",\"scheduler\":\"normal\",\"model\":[\"4\",0],\"positive\":[\"6\",0]," \
    "\"negative\":[\"7\",0],\"latent_image\":[\"5\",0],\"start_at_step\":" start ",\"end_at_step\":" end "," \
    "\"return_with_leftover_noise\":\"" left "\"}}"
#define EMPTY "{\"class_type\":\"EmptyLatentImage\",\"inputs\":{\"width\":64,\"height\":64,\"batch_size\":1}}"
#define ENCODE(image) \
    "{\"class_type\":\"VAEEncode\",\"inputs\":{\"pixels\":[\"10\",0],\"vae\":[\"4\",2]}}", "[\"4\",1]", \
    ",\"10\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"" image "\"}}"

/* POSTs a graph; on 200 waits for its history entry and returns node 9's
 * PNG from /view. *status: /prompt's answer. */
static uint8_t *comfy_run(const char *graph, size_t *n, int *status)
{
    reply r = http(main_srv.port, "POST", "/prompt", graph);
    *status = r.status;
    if (r.status != 200) {
        printf("  /prompt %d: %.300s\n", r.status, r.body);
        free(r.head);
        return NULL;
    }
    cJSON *j = json_of(&r);
    char path[256], id[64];
    snprintf(id, sizeof id, "%s", cJSON_GetObjectItem(j, "prompt_id")->valuestring);
    cJSON_Delete(j);
    free(r.head);
    snprintf(path, sizeof path, "/history/%s", id);
    cJSON *h = NULL, *entry = NULL;
    for (int t = 0; t < 2400 && !entry; t++) {
        r = http(main_srv.port, "GET", path, NULL);
        h = json_of(&r);
        free(r.head);
        if (!(entry = cJSON_GetObjectItem(h, id))) { cJSON_Delete(h); usleep(50000); }
    }
    assert_non_null(entry);
    const cJSON *st = cJSON_GetObjectItem(entry, "status");
    if (strcmp(cJSON_GetObjectItem(st, "status_str")->valuestring, "success"))
        fail_msg("prompt failed: %s", cJSON_PrintUnformatted(st));
    cJSON *im = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(entry, "outputs"), "9"), "images"), 0);
    snprintf(path, sizeof path, "/view?filename=%s", cJSON_GetObjectItem(im, "filename")->valuestring);
    cJSON_Delete(h);
    r = http(main_srv.port, "GET", path, NULL);
    assert_int_equal(r.status, 200);
    *n = (size_t)atol(strstr(r.head, "Content-Length: ") + 16);
    uint8_t *png = malloc(*n);
    memcpy(png, r.body, *n);
    free(r.head);
    return png;
}

static void expect_equal_png(const char *what, const uint8_t *got, size_t n, const uint8_t *want, size_t want_n)
{
    printf("  %s: %zu bytes from the graph, %zu from the CLI\n", what, n, want_n);
    assert_non_null(got);
    assert_int_equal(n, want_n);
    assert_memory_equal(got, want, n);
}

/* POST /upload/image as ComfyUI's frontend sends it (multipart form). */
static reply upload(const char *filename, const char *subfolder, const char *overwrite, const uint8_t *data, size_t n)
{
    static const char b[] = "fmimageBoundary7MA4YWxk";
    size_t cap = n + 4096, len = 0;
    char *body = malloc(cap);
    len += (size_t)snprintf(body + len, cap - len,
                            "--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"%s\"\r\n"
                            "Content-Type: image/png\r\n\r\n", b, filename);
    memcpy(body + len, data, n);
    len += n;
    len += (size_t)snprintf(body + len, cap - len,
                            "\r\n--%s\r\nContent-Disposition: form-data; name=\"subfolder\"\r\n\r\n%s\r\n"
                            "--%s\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\n%s\r\n"
                            "--%s\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ninput\r\n--%s--\r\n",
                            b, subfolder, b, overwrite, b, b);
    char headers[200];
    snprintf(headers, sizeof headers, "Content-Type: multipart/form-data; boundary=%s\r\n", b);
    reply r = http_read(http_send(main_srv.port, "POST", "/upload/image", headers, body, len));
    free(body);
    return r;
}

/* A 70x67 picture: its sides are not multiples of 8, so VAEEncode crops. */
static void test_pattern(uint8_t *rgb, int w, int h)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 255 / w);
            p[1] = (uint8_t)(y * 255 / h);
            p[2] = (uint8_t)((x ^ y) * 4);
        }
}

static void test_comfy_upload_and_img2img_equal_cli(void **state)
{
    (void)state;
    enum { W = 70, H = 67 };
    uint8_t rgb[W * H * 3], crop[64 * 64 * 3];
    test_pattern(rgb, W, H);
    char src[400], cropped[400];
    snprintf(src, sizeof src, "%s/in.png", dir);
    snprintf(cropped, sizeof cropped, "%s/in-cropped.png", dir);
    fm_error err = {0};
    assert_int_equal(fm_png_write(src, rgb, W, H, NULL, &err), 0);
    /* ComfyUI's vae_encode_crop_pixels: 64x64 from offset ((70 % 8) / 2, (67 % 8) / 2) = (3, 1) */
    for (int y = 0; y < 64; y++) memcpy(crop + y * 64 * 3, rgb + ((y + 1) * W + 3) * 3, 64 * 3);
    assert_int_equal(fm_png_write(cropped, crop, 64, 64, NULL, &err), 0);
    size_t n = 0;
    uint8_t *file = cu_slurp(src, &n);
    reply r = upload("in.png", "", "false", file, n);
    assert_int_equal(r.status, 200);
    cJSON *j = json_of(&r);
    assert_string_equal(cJSON_GetObjectItem(j, "name")->valuestring, "in.png");
    assert_string_equal(cJSON_GetObjectItem(j, "subfolder")->valuestring, "");
    assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring, "input");
    cJSON_Delete(j);
    free(r.head);
    /* the same name again: renamed as ComfyUI does, unless overwrite */
    r = upload("in.png", "", "false", file, n);
    assert_non_null(strstr(r.body, "\"name\":\"in (1).png\""));
    free(r.head);
    r = upload("in.png", "", "true", file, n);
    assert_non_null(strstr(r.body, "\"name\":\"in.png\""));
    free(r.head);
    r = upload("in.png", "sub", "true", file, n);
    assert_non_null(strstr(r.body, "\"subfolder\":\"sub\""));
    free(r.head);
    r = http(main_srv.port, "GET", "/object_info", NULL);
    j = json_of(&r);
    char *images = cJSON_PrintUnformatted(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "LoadImage"), "input"), "required"));
    printf("  LoadImage lists %s\n", images);
    assert_non_null(strstr(images, "\"in (1).png\""));
    assert_non_null(strstr(images, "\"sub/in.png\""));
    free(images);
    cJSON_Delete(j);
    free(r.head);
    free(file);

    /* KSampler denoise 0.6 at 6 steps: ComfyUI's set_steps takes the last 6
     * sigmas of an int(6 / 0.6) = 10-step schedule; A1111's img2img runs
     * int(strength * 10) + 1 = 6 of 10 at strength 0.55: the same sigmas. */
    const char *args[] = {"-m", "tests/data/tiny-sd1.safetensors", "a red fox in snow", "-n", "blurry", "--seed", "42",
                          "-i", cropped, "--strength", "0.55", "-W", "64", "-H", "64", "--sampler", "euler",
                          "--scheduler", "normal", "--steps", "10", "--cfg", "7.5", "--rng", "cpu", NULL};
    size_t want_n;
    uint8_t *want = cli_png("comfy-i2i.png", args, &want_n);
    char wf[8192];
    int st;
    comfy_graph(wf, sizeof wf, KS("[\"4\",0]", "0.6"), ENCODE("in.png"));
    uint8_t *got = comfy_run(wf, &n, &st);
    expect_equal_png("VAEEncode + KSampler denoise 0.6", got, n, want, want_n);
    free(got);
    /* KSamplerAdvanced 10 steps from step 4: the last 6 of the same schedule */
    comfy_graph(wf, sizeof wf, KSA("enable", "10", "4", "10000", "disable"), ENCODE("sub/in.png [input]"));
    got = comfy_run(wf, &n, &st);
    expect_equal_png("VAEEncode + KSamplerAdvanced start_at_step 4 of 10", got, n, want, want_n);
    free(got);
    free(want);
}

static void test_comfy_lora_clip_skip_advanced_equal_cli(void **state)
{
    (void)state;
    char wf[8192];
    size_t n, want_n;
    int st;
    /* LoraLoader (model 0.5, clip 0.75) -> CLIPSetLastLayer -2 for the texts:
     * the CLI's <lora:NAME:TE:UNET> and --clip-skip 2 */
    comfy_graph(wf, sizeof wf, KS("[\"11\",0]", "1"), EMPTY, "[\"12\",0]",
                ",\"11\":{\"class_type\":\"LoraLoader\",\"inputs\":{\"model\":[\"4\",0],\"clip\":[\"4\",1],"
                "\"lora_name\":\"sd1_full.safetensors\",\"strength_model\":0.5,\"strength_clip\":0.75}},"
                "\"12\":{\"class_type\":\"CLIPSetLastLayer\",\"inputs\":{\"clip\":[\"11\",1],\"stop_at_clip_layer\":-2}}");
    uint8_t *got = comfy_run(wf, &n, &st);
    char lora_arg[600];
    snprintf(lora_arg, sizeof lora_arg, "--lora-dir=%s", loras);
    const char *args[] = {"-m", "tests/data/tiny-sd1.safetensors", "a red fox in snow<lora:sd1_full:0.75:0.5>", "-n",
                          "blurry", "--seed", "42", "-W", "64", "-H", "64", "--sampler", "euler", "--scheduler",
                          "normal", "--steps", "6", "--cfg", "7.5", "--rng", "cpu", "--clip-skip", "2", lora_arg, NULL};
    uint8_t *want = cli_png("comfy-lora.png", args, &want_n);
    expect_equal_png("LoraLoader + CLIPSetLastLayer", got, n, want, want_n);
    free(got);
    free(want);
    /* KSamplerAdvanced over all steps is KSampler at denoise 1 */
    comfy_graph(wf, sizeof wf, KSA("enable", "6", "0", "10000", "disable"), EMPTY, "[\"4\",1]", "");
    got = comfy_run(wf, &n, &st);
    const char *args2[] = {"-m", "tests/data/tiny-sd1.safetensors", "a red fox in snow", "-n", "blurry", "--seed", "42",
                           "-W", "64", "-H", "64", "--sampler", "euler", "--scheduler", "normal", "--steps", "6",
                           "--cfg", "7.5", "--rng", "cpu", NULL};
    want = cli_png("comfy-adv.png", args2, &want_n);
    expect_equal_png("KSamplerAdvanced 0..steps", got, n, want, want_n);
    free(got);
    free(want);
}

/* The two-pass workflow: KSampler -> LatentUpscale -> KSampler at denoise
 * 0.5 is A1111's latent hires fix (its second pass runs the last 4 of
 * int(4 / 0.5) = 8 steps, as ComfyUI's set_steps). */
#define HIRES_FIRST \
    ",\"13\":{\"class_type\":\"KSampler\",\"inputs\":{\"seed\":42,\"steps\":6,\"cfg\":7.5,\"sampler_name\":\"euler\"," \
    "\"scheduler\":\"normal\",\"denoise\":1,\"model\":[\"4\",0],\"positive\":[\"6\",0],\"negative\":[\"7\",0]," \
    "\"latent_image\":[\"14\",0]}},\"14\":" EMPTY
#define HIRES_SECOND(seed) \
    "{\"class_type\":\"KSampler\",\"inputs\":{\"seed\":" seed ",\"steps\":4,\"cfg\":7.5,\"sampler_name\":\"dpmpp_2m\"," \
    "\"scheduler\":\"normal\",\"denoise\":0.5,\"model\":[\"4\",0],\"positive\":[\"6\",0],\"negative\":[\"7\",0]," \
    "\"latent_image\":[\"5\",0]}}"
#define UPSCALE(method, w, h) \
    "{\"class_type\":\"LatentUpscale\",\"inputs\":{\"samples\":[\"13\",0],\"upscale_method\":\"" method "\"," \
    "\"width\":" w ",\"height\":" h ",\"crop\":\"disabled\"}}"

static void test_comfy_hires_equals_cli(void **state)
{
    (void)state;
    char wf[8192];
    size_t n, want_n;
    int st;
    comfy_graph(wf, sizeof wf, HIRES_SECOND("42"), UPSCALE("nearest-exact", "128", "128"), "[\"4\",1]", HIRES_FIRST);
    uint8_t *got = comfy_run(wf, &n, &st);
    const char *args[] = {"-m", "tests/data/tiny-sd1.safetensors", "a red fox in snow", "-n", "blurry", "--seed", "42",
                          "-W", "64", "-H", "64", "--sampler", "euler", "--scheduler", "normal", "--steps", "6", "--cfg",
                          "7.5", "--rng", "cpu", "--hires-width", "128", "--hires-height", "128", "--hires-upscaler",
                          "Latent (nearest-exact)", "--hires-steps", "4", "--hires-denoise", "0.5", "--hires-sampler",
                          "dpmpp_2m", NULL};
    uint8_t *want = cli_png("comfy-hires.png", args, &want_n);
    expect_equal_png("KSampler -> LatentUpscale 128x128 -> KSampler denoise 0.5", got, n, want, want_n);
    free(got);
    free(want);
    /* what A1111's hires fix cannot do */
    struct { const char *second, *up, *says; } bad[] = {
        {HIRES_SECOND("7"), UPSCALE("nearest-exact", "128", "128"), "another seed"},
        {HIRES_SECOND("42"), UPSCALE("area", "128", "128"), "area or bislerp"},
        {HIRES_SECOND("42"), UPSCALE("bislerp", "128", "128"), "area or bislerp"},
        {HIRES_SECOND("42"), UPSCALE("bilinear", "128", "96"), "aspect ratio"},
        {HIRES_SECOND("42"), UPSCALE("bilinear", "0", "128"), "0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        comfy_graph(wf, sizeof wf, bad[i].second, bad[i].up, "[\"4\",1]", HIRES_FIRST);
        reply r = http(main_srv.port, "POST", "/prompt", wf);
        if (r.status != 400 || !strstr(r.body, bad[i].says)) fail_msg("hires case %zu: %d %s", i, r.status, r.body);
        free(r.head);
    }
}

/* What the library cannot run, bad values and names outside their places. */
static void test_comfy_node_errors(void **state)
{
    (void)state;
    char wf[8192];
    struct {
        const char *sampler, *latent, *clip, *extra;
        int status;
        const char *node, *says;
    } cases[] = {
        {KSA("disable", "6", "0", "10000", "disable"), EMPTY, "[\"4\",1]", "", 400, "3", "add_noise"},
        {KSA("enable", "6", "0", "4", "enable"), EMPTY, "[\"4\",1]", "", 400, "3", "leftover"},
        {KSA("enable", "6", "6", "10000", "disable"), EMPTY, "[\"4\",1]", "", 400, "3", "start_at_step"},
        {KSA("enable", "6", "2", "10000", "disable"), EMPTY, "[\"4\",1]", "", 400, "3", "empty latent"},
        {KS("[\"4\",0]", "0.5"), EMPTY, "[\"4\",1]", "", 400, "3", "empty latent"},
        {KS("[\"4\",0]", "0"), EMPTY, "[\"4\",1]", "", 400, "3", "denoise 0"},
        {KS("[\"4\",0]", "1.5"), EMPTY, "[\"4\",1]", "", 400, "3", "value_bigger_than_max"},
        {KS("[\"4\",0]", "1"), "{\"class_type\":\"LatentUpscale\",\"inputs\":{\"samples\":[\"4\",0]}}", "[\"4\",1]", "", 400, "5", "return_type_mismatch"},
        {KS("[\"4\",0]", "0.5"), ENCODE("never-uploaded.png"), 404, "10", "not uploaded"},
        {KS("[\"4\",0]", "0.5"), ENCODE("../in.png"), 404, "10", "not uploaded"},
        {KS("[\"4\",0]", "0.5"), ENCODE("/etc/passwd"), 404, "10", "not uploaded"},
        {KS("[\"11\",0]", "1"), EMPTY, "[\"4\",1]",
         ",\"11\":{\"class_type\":\"LoraLoader\",\"inputs\":{\"model\":[\"4\",0],\"clip\":[\"4\",1],"
         "\"lora_name\":\"../loras/sd1_full.safetensors\",\"strength_model\":1,\"strength_clip\":1}}", 404, "11", "lora_name"},
        {KS("[\"11\",0]", "1"), EMPTY, "[\"4\",1]",
         ",\"11\":{\"class_type\":\"LoraLoader\",\"inputs\":{\"model\":[\"4\",0],\"clip\":[\"4\",1],"
         "\"lora_name\":\"evilora.safetensors\",\"strength_model\":1,\"strength_clip\":1}}", 404, "11", "lora_name"},
        {KS("[\"4\",0]", "1"), EMPTY, "[\"12\",0]",
         ",\"12\":{\"class_type\":\"CLIPSetLastLayer\",\"inputs\":{\"clip\":[\"4\",1],\"stop_at_clip_layer\":-25}}", 400, "12", "value_smaller_than_min"},
        {KS("[\"4\",0]", "1"), EMPTY, "[\"12\",1]",
         ",\"12\":{\"class_type\":\"CLIPSetLastLayer\",\"inputs\":{\"clip\":[\"4\",1],\"stop_at_clip_layer\":-2}}", 400, "6", "return_type_mismatch"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        comfy_graph(wf, sizeof wf, cases[i].sampler, cases[i].latent, cases[i].clip, cases[i].extra);
        reply r = http(main_srv.port, "POST", "/prompt", wf);
        if (r.status != cases[i].status || !strstr(r.body, cases[i].says))
            fail_msg("case %zu: %d %s", i, r.status, r.body);
        cJSON *j = json_of(&r);
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "type")->valuestring,
                            "prompt_outputs_failed_validation");
        cJSON *ne = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "node_errors"), cases[i].node);
        if (!ne) fail_msg("case %zu: no node_errors[%s]: %s", i, cases[i].node, r.body);
        assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(ne, "errors")) == 1);
        cJSON_Delete(j);
        free(r.head);
    }
    /* the positive text through CLIPSetLastLayer, the negative not: one CLIP per job */
    comfy_graph(wf, sizeof wf, KS("[\"4\",0]", "1"), EMPTY, "[\"12\",0]",
                ",\"12\":{\"class_type\":\"CLIPSetLastLayer\",\"inputs\":{\"clip\":[\"4\",1],\"stop_at_clip_layer\":-2}}");
    char *neg = strstr(wf, "\"blurry\",\"clip\":[\"12\",0]");
    assert_non_null(neg);
    memcpy(neg + 16, "[\"4\",1] ", 8); /* the same length: JSON allows the space */
    reply r = http(main_srv.port, "POST", "/prompt", wf);
    if (r.status != 400 || !strstr(r.body, "different CLIPs")) fail_msg("two CLIPs: %d %s", r.status, r.body);
    free(r.head);
    /* upload names that would leave the input store's one level */
    static const struct { const char *name, *sub; } bad[] = {
        {"../x.png", ""}, {"a/b.png", ""}, {".hidden.png", ""}, {"x.png", ".."}, {"x.png", "a/b"}, {"x.png", "/etc"}, {"", ""}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = upload(bad[i].name, bad[i].sub, "true", (const uint8_t *)"png", 3);
        if (r.status != 400) fail_msg("upload %s in %s: %d %s", bad[i].name, bad[i].sub, r.status, r.body);
        free(r.head);
    }
    r = http(main_srv.port, "POST", "/upload/image", "not a form");
    assert_int_equal(r.status, 400);
    free(r.head);
}

/* One server frame (unmasked) from fd: its opcode, payload in buf. */
static int ws_frame(int fd, char *buf, size_t cap, size_t *n)
{
    uint8_t h[10];
    if (recv(fd, h, 2, MSG_WAITALL) != 2) return -1;
    size_t len = h[1] & 127;
    assert_int_equal(h[1] >> 7, 0); /* a server does not mask */
    if (len == 126) {
        if (recv(fd, h + 2, 2, MSG_WAITALL) != 2) return -1;
        len = (size_t)h[2] << 8 | h[3];
    } else if (len == 127) {
        if (recv(fd, h + 2, 8, MSG_WAITALL) != 8) return -1;
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | h[2 + i];
    }
    assert_true(len < cap);
    if (len && recv(fd, buf, len, MSG_WAITALL) != (ssize_t)len) return -1;
    buf[len] = 0;
    *n = len;
    return h[0] & 15;
}

/* /ws: the RFC 6455 handshake (its own example key), status with the sid,
 * a ping answered, then a prompt's execution_start .. executed ..
 * execution_success .. executing null, as ComfyUI's server sends them. */
static void test_comfy_ws(void **state)
{
    (void)state;
    reply r = http(main_srv.port, "GET", "/ws?clientId=abc", NULL);
    assert_int_equal(r.status, 400); /* not an upgrade */
    free(r.head);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)main_srv.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {300, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    static const char upgrade[] = "GET /ws?clientId=abc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Version: 13\r\n\r\n";
    assert_int_equal(send(fd, upgrade, strlen(upgrade), 0), (ssize_t)strlen(upgrade));
    char head[2048] = "";
    size_t hn = 0;
    while (hn < sizeof head - 1 && !strstr(head, "\r\n\r\n")) {
        if (recv(fd, head + hn, 1, 0) != 1) break;
        head[++hn] = 0;
    }
    assert_non_null(strstr(head, "HTTP/1.1 101"));
    assert_non_null(strstr(head, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")); /* RFC 6455 section 1.3 */
    static char buf[1 << 16];
    size_t n;
    assert_int_equal(ws_frame(fd, buf, sizeof buf, &n), 1);
    printf("  first message: %s\n", buf);
    assert_non_null(strstr(buf, "\"type\":\"status\""));
    assert_non_null(strstr(buf, "\"sid\":\"abc\""));
    assert_non_null(strstr(buf, "\"queue_remaining\":0"));
    /* a masked ping "hi": the pong carries the same payload */
    const uint8_t ping[] = {0x89, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2};
    assert_int_equal(send(fd, ping, sizeof ping, 0), (ssize_t)sizeof ping);
    assert_int_equal(ws_frame(fd, buf, sizeof buf, &n), 10);
    assert_string_equal(buf, "hi");
    char wf[4096];
    comfy_workflow(wf, sizeof wf, "tiny-sd1.safetensors", "KSampler", "[\"4\",2]");
    r = http(main_srv.port, "POST", "/prompt", wf);
    assert_int_equal(r.status, 200);
    cJSON *j = json_of(&r);
    char id[64];
    snprintf(id, sizeof id, "%s", cJSON_GetObjectItem(j, "prompt_id")->valuestring);
    cJSON_Delete(j);
    free(r.head);
    static const char *const order[] = {"execution_start", "executing", "executed", "execution_success", "executing"};
    int k = 0, progress = 0;
    while (k < 5) {
        assert_int_equal(ws_frame(fd, buf, sizeof buf, &n), 1);
        j = cJSON_Parse(buf);
        assert_non_null(j);
        const char *type = cJSON_GetObjectItem(j, "type")->valuestring;
        cJSON *d = cJSON_GetObjectItem(j, "data"), *pid = cJSON_GetObjectItem(d, "prompt_id");
        progress += !strcmp(type, "progress");
        if (pid && !strcmp(pid->valuestring, id) && !strcmp(type, order[k])) {
            if (k == 1) assert_string_equal(cJSON_GetObjectItem(d, "node")->valuestring, "3");
            if (k == 2) assert_non_null(strstr(buf, "\"images\":[{\"filename\":\"fmimage_"));
            if (k == 4) assert_true(cJSON_IsNull(cJSON_GetObjectItem(d, "node")));
            k++;
        }
        cJSON_Delete(j);
    }
    printf("  /ws: start, executing 3, %d progress, executed, success, executing null\n", progress);
    const uint8_t bye[] = {0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2};
    assert_int_equal(send(fd, bye, sizeof bye, 0), (ssize_t)sizeof bye);
    int op;
    while ((op = ws_frame(fd, buf, sizeof buf, &n)) == 1) {}
    assert_int_equal(op, 8); /* the close answered */
    close(fd);
}

/* ---- server/ directly ---- */

static void test_parser_and_helpers(void **state)
{
    (void)state;
    srv_gen g;
    char msg[256], loc[64];
    assert_int_equal(srv_parse_gen(fox, strlen(fox), 0, &g, msg, sizeof msg, loc, sizeof loc), 0);
    assert_string_equal(g.prompt, "a red fox in snow");
    assert_int_equal(g.steps, 6);
    assert_int_equal(g.seed, 42);
    assert_true(g.cfg == 7.5f);
    assert_string_equal(g.scheduler, "normal");
    srv_gen_free(&g);
    assert_int_equal(srv_parse_gen("{\"steps\":\"12\",\"cfg_scale\":\"3.5\"}", 33, 0, &g, msg, sizeof msg, loc, sizeof loc), 0);
    assert_int_equal(g.steps, 12); /* pydantic coerces numeric strings */
    srv_gen_free(&g);
    assert_int_equal(srv_parse_gen("{\"steps\":null,\"seed\":null}", 26, 0, &g, msg, sizeof msg, loc, sizeof loc), 0);
    assert_int_equal(g.steps, 0);
    assert_int_equal(g.seed, -1);
    srv_gen_free(&g);
    char out[4096];
    assert_int_equal(srv_resolve(models, "tiny-sd1.safetensors", out, sizeof out), 0);
    assert_int_equal(srv_resolve(models, "../secret.safetensors", out, sizeof out), -1);
    assert_int_equal(srv_resolve(models, "evil.safetensors", out, sizeof out), -1);
    assert_int_equal(srv_resolve(models, "/etc/passwd", out, sizeof out), -1);
    assert_int_equal(srv_resolve(models, ".", out, sizeof out), -1);
    assert_true(srv_auth_ok("a:b,cc:dd", "cc:dd", 5));
    assert_false(srv_auth_ok("a:b,cc:dd", "cc:d", 4));
    assert_false(srv_auth_ok("a:b,cc:dd", "a:b,cc:dd", 9));
    assert_false(srv_auth_ok("a:b", "", 0));
    size_t n;
    uint8_t *d = srv_base64_decode("aGVsbG8=", &n);
    assert_int_equal(n, 5);
    assert_memory_equal(d, "hello", 5);
    free(d);
    char *e = srv_base64_encode((const uint8_t *)"hello", 5);
    assert_string_equal(e, "aGVsbG8=");
    free(e);
    assert_null(srv_base64_decode("a*b", &n));
}

/* --embeddings-dir: /sdapi/v1/embeddings in A1111's shape (loaded: the
 * files of the model's width, with their vector counts; skipped: an SDXL
 * file), an embedding named in the prompt gives the CLI's bytes; --taesd:
 * /progress's current_image is a PNG of 8 x the latent while a job runs. */
static void test_embeddings_and_preview(void **state)
{
    (void)state;
    char edir[600], cmd[2048];
    snprintf(edir, sizeof edir, "%s/emb", dir);
    /* and a symlink out of the directory, which must be neither listed nor used */
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp tests/data/embeddings/*.safetensors tests/data/embeddings-sdxl/xlemb.safetensors %s/ && "
             "ln -s \"$PWD/tests/data/embeddings/tiv.safetensors\" %s/outside.safetensors",
             edir, edir, edir);
    assert_int_equal(system(cmd), 0);
    server s;
    const char *extra[] = {"-m", "tests/data/tiny-sd1.safetensors", "--embeddings-dir", edir, "--taesd",
                           "tests/data/taesd-weights.safetensors", "--preview-every", "1", NULL};
    assert_int_equal(start_server(&s, extra, 1), 0);
    reply r = http(s.port, "GET", "/sdapi/v1/embeddings", NULL);
    assert_int_equal(r.status, 200);
    cJSON *j = json_of(&r), *loaded = cJSON_GetObjectItem(j, "loaded"), *skipped = cJSON_GetObjectItem(j, "skipped");
    printf("  %s\n", r.body);
    static const struct { const char *name; int vectors; } want[] = {{"tiv", 1}, {"manyvec", 12}, {"big", 40}, {"Style-Two", 3}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const cJSON *e = cJSON_GetObjectItem(loaded, want[i].name);
        if (!e) fail_msg("no %s in loaded: %.400s", want[i].name, r.body);
        assert_int_equal(cJSON_GetObjectItem(e, "vectors")->valueint, want[i].vectors);
        assert_int_equal(cJSON_GetObjectItem(e, "shape")->valueint, 8); /* tiny-sd1's text width */
        assert_true(cJSON_IsNull(cJSON_GetObjectItem(e, "step")));
        assert_non_null(cJSON_GetObjectItem(e, "sd_checkpoint_name"));
    }
    assert_non_null(cJSON_GetObjectItem(skipped, "xlemb"));
    assert_null(cJSON_GetObjectItem(loaded, "xlemb"));
    assert_null(strstr(r.body, "outside"));
    cJSON_Delete(j);
    free(r.head);
    /* a prompt's embedding: the CLI's bytes, with its TI hashes */
    const char *args[] = {"-m", "tests/data/tiny-sd1.safetensors", "a tiv fox", "-n", "manyvec", "--embeddings-dir",
                          edir, "--seed", "5", "-W", "64", "-H", "64", "--steps", "5", NULL};
    size_t n = 0;
    uint8_t *cli = cli_png("emb.png", args, &n);
    r = http(s.port, "POST", "/sdapi/v1/txt2img",
             "{\"prompt\":\"a tiv fox\",\"negative_prompt\":\"manyvec\",\"seed\":5,\"width\":64,\"height\":64,\"steps\":5}");
    if (r.status != 200) fail_msg("txt2img: %d %.300s", r.status, r.body);
    j = json_of(&r);
    size_t got_n;
    uint8_t *got = b64_decode(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "images"), 0)->valuestring, &got_n);
    printf("  embedding image: %zu bytes from the server, %zu from the CLI\n", got_n, n);
    assert_int_equal(got_n, n);
    assert_memory_equal(got, cli, n);
    assert_non_null(strstr(cJSON_GetObjectItem(j, "info")->valuestring, "TI hashes"));
    free(got);
    free(cli);
    cJSON_Delete(j);
    free(r.head);
    /* the escaping symlink's name is a plain word: the CLI's image without embeddings */
    const char *plain[] = {"-m", "tests/data/tiny-sd1.safetensors", "an outside fox", "--seed", "5", "-W", "64", "-H",
                           "64", "--steps", "5", NULL};
    cli = cli_png("outside.png", plain, &n);
    r = http(s.port, "POST", "/sdapi/v1/txt2img",
             "{\"prompt\":\"an outside fox\",\"seed\":5,\"width\":64,\"height\":64,\"steps\":5}");
    j = json_of(&r);
    got = b64_decode(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "images"), 0)->valuestring, &got_n);
    assert_int_equal(got_n, n);
    assert_memory_equal(got, cli, n);
    assert_null(strstr(cJSON_GetObjectItem(j, "info")->valuestring, "TI hashes"));
    free(got);
    free(cli);
    cJSON_Delete(j);
    free(r.head);
    /* the live preview while a long job runs */
    int fd = http_send(s.port, "POST", "/sdapi/v1/txt2img", NULL, slow, strlen(slow));
    cJSON *image = NULL;
    double eta = -1;
    int step = 0, steps = 0;
    for (int t = 0; t < 1200 && !image; t++) {
        r = http(s.port, "GET", "/sdapi/v1/progress", NULL);
        j = json_of(&r);
        if (cJSON_IsString(cJSON_GetObjectItem(j, "current_image"))) {
            image = cJSON_DetachItemFromObject(j, "current_image");
            eta = cJSON_GetObjectItem(j, "eta_relative")->valuedouble;
            step = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "state"), "sampling_step")->valueint;
            steps = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "state"), "sampling_steps")->valueint;
        }
        cJSON_Delete(j);
        free(r.head);
        if (!image) usleep(50000);
    }
    if (!image) fail_msg("no current_image while the job ran");
    printf("  preview at step %d of %d, eta_relative %.2f s\n", step, steps, eta);
    assert_int_equal(steps, 1000);
    assert_true(step >= 1 && eta >= 0);
    uint8_t *png = b64_decode(image->valuestring, &got_n);
    assert_true(got_n > 33);
    assert_memory_equal(png, "\x89PNG\r\n\x1a\n", 8);
    uint32_t w = (uint32_t)png[16] << 24 | (uint32_t)png[17] << 16 | png[18] << 8 | png[19];
    uint32_t h = (uint32_t)png[20] << 24 | (uint32_t)png[21] << 16 | png[22] << 8 | png[23];
    assert_int_equal(w, 256); /* 8 x the 32 x 32 latent of tiny-sd1 (latent factor 2) */
    assert_int_equal(h, 256);
    free(png);
    cJSON_Delete(image);
    r = http(s.port, "POST", "/sdapi/v1/interrupt", "");
    free(r.head);
    r = http_read(fd);
    assert_int_equal(r.status, 200);
    free(r.head);
    /* idle: no image */
    r = http(s.port, "GET", "/sdapi/v1/progress", NULL);
    assert_non_null(strstr(r.body, "\"current_image\":null"));
    free(r.head);
    assert_int_equal(stop_server(&s), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parser_and_helpers),
        cmocka_unit_test(test_txt2img_equals_cli),
        cmocka_unit_test(test_batch_and_label_equal_cli),
        cmocka_unit_test(test_img2img_equals_cli),
        cmocka_unit_test(test_img2img_inpaint_equals_cli),
        cmocka_unit_test(test_txt2img_hires_equals_cli),
        cmocka_unit_test(test_listing_endpoints),
        cmocka_unit_test(test_png_info),
        cmocka_unit_test(test_options_switch_model),
        cmocka_unit_test(test_names_stay_inside),
        cmocka_unit_test(test_422),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_limits_chunked_body),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_cors),
        cmocka_unit_test(test_comfy_default_workflow_equals_cli),
        cmocka_unit_test(test_comfy_errors),
        cmocka_unit_test(test_comfy_upload_and_img2img_equal_cli),
        cmocka_unit_test(test_comfy_lora_clip_skip_advanced_equal_cli),
        cmocka_unit_test(test_comfy_hires_equals_cli),
        cmocka_unit_test(test_comfy_node_errors),
        cmocka_unit_test(test_comfy_ws),
        cmocka_unit_test(test_queue_full_and_interrupt),
        cmocka_unit_test(test_disconnect_frees_the_slot),
        cmocka_unit_test(test_save_dir_complete_pngs),
        cmocka_unit_test(test_sigterm_mid_job_exits_0),
        cmocka_unit_test(test_embeddings_and_preview),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
