/* server internals shared by its files: the job queue, the worker's
 * state, the HTTP routes. */
#ifndef FM_SERVER_INTERNAL_H
#define FM_SERVER_INTERNAL_H

#include <limits.h>
#include <pthread.h>

#include <cjson/cJSON.h>

#include "server.h"

typedef enum { SRV_JOB_GEN, SRV_JOB_LOAD } srv_job_kind;

typedef struct srv_job {
    srv_job_kind kind;
    srv_gen g;
    char model[256];          /* checkpoint name to use ("" = the current one) */
    /* results, written by the worker before done */
    int done;
    int status;               /* HTTP status: 200, or the error's */
    char msg[1024];
    char *images[SRV_MAX_IMAGES]; /* base64 PNGs */
    char *infotexts[SRV_MAX_IMAGES];
    int64_t seeds[SRV_MAX_IMAGES];
    int n_images;
    int width, height, steps, clip_skip;
    float cfg;
    char sampler_label[64], scheduler_label[64];
    char model_name[256], model_hash[11];
    /* ComfyUI /prompt: answered at once, the result kept in the history */
    int async;
    char prompt_id[40];
    long number;
    char save_node[64];
    char sampler_node[64];    /* its KSampler's id (progress messages) */
    cJSON *graph;
} srv_job;

/* ComfyUI: an image uploaded for LoadImage, kept in memory ("sub/name") */
typedef struct srv_input {
    char name[256];
    uint8_t *data;
    size_t n;
} srv_input;
#define SRV_INPUTS 64                  /* uploads kept; the oldest goes first */
#define SRV_INPUT_BYTES ((size_t)256 << 20)

/* a POST /upload/image form, as the multipart parser fills it */
typedef struct srv_upload {
    char filename[256], subfolder[256], type[16], overwrite[8];
    uint8_t *data;
    size_t n, cap;
    int has_image, too_long;
} srv_upload;

typedef struct srv_state {
    const srv_config *c;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    srv_job **q;
    int q_cap, q_head, q_n;
    int stopping;
    /* what the worker does now (under mu) */
    srv_job *current;
    int step, steps, image_no, image_count;
    /* ComfyUI: finished prompts, oldest first (at most SRV_HISTORY) */
    srv_job *history[64];
    int n_history;
    long next_number;
    srv_input inputs[SRV_INPUTS];
    int n_inputs;
    size_t input_bytes;
    int n_ws;                 /* /ws sessions open */
    double t_start;
    /* --taesd: the running job's latest live preview, RGB (w = 0: none yet) */
    uint8_t *preview;
    size_t preview_cap;
    int preview_w, preview_h;
    volatile int interrupt, skip;
    /* the checkpoint: its name (relative to models_dir, or -m's file name) */
    char checkpoint[256];
    /* the worker's own (only the worker touches them) */
    fm_model *model;
    char model_path[PATH_MAX], model_name[256], model_hash[11];
} srv_state;

/* worker.c */
int srv_queue_push(srv_state *s, srv_job *j);  /* 0, or 503 when full or stopping */
/* Waits for j; a client that hangs up (client_fd >= 0) cancels it: the
 * running job stops at its next step, a queued one leaves the queue. */
void srv_wait(srv_state *s, srv_job *j, int client_fd);
void *srv_worker(void *arg);
void srv_job_free(srv_job *j);
/* "name.safetensors" file names of the checkpoints (sorted), *n of them */
char **srv_list_files(const char *dir, const char *const *exts, int recurse, int *n);
void srv_free_list(char **v, int n);
int srv_model_path(const srv_state *s, const char *name, char *path, size_t n);
double srv_now(void);

/* image_io.c */
/* A PNG in memory (malloc'd, *n bytes) with the "parameters" text, or NULL. */
uint8_t *srv_png_encode(const uint8_t *rgb, int w, int h, const char *parameters, size_t *n, fm_error *err);
/* A request's image bytes (PNG, JPEG, ...) as 8-bit RGB (as_mask: a mask,
 * read as fm_mask_read reads a file), through a memfd; errors name field. */
uint8_t *srv_image_decode(const char *field, const uint8_t *bytes, size_t len, int as_mask, int *w, int *h,
                          fm_error *err);

/* a1111.c: one route. Returns the HTTP status, *out the JSON body. */
int srv_a1111(srv_state *s, const char *method, const char *url, const char *body, size_t n, int client_fd, char **out);
/* comfy.c: ComfyUI's routes; srv_history_add is called under mu */
int srv_comfy(srv_state *s, const char *method, const char *url, const char *query_file, const char *body, size_t n,
              char **out, size_t *out_n, const char **type);
void srv_history_add(srv_state *s, srv_job *j);
void srv_history_free(srv_state *s);
/* POST /upload/image: stores the form's image; the HTTP status, *out JSON */
int srv_comfy_upload(srv_state *s, const srv_upload *u, char **out);
/* a copy of the uploaded image `name` ("sub/name", " [input]" allowed), or -1 */
int srv_input_get(srv_state *s, const char *name, uint8_t **data, size_t *n);
void srv_inputs_free(srv_state *s);

/* the history's outputs[SAVE].images of j (filename, subfolder, type) */
cJSON *srv_comfy_images(const srv_job *j);

/* comfy_ws.c: /ws. Sec-WebSocket-Accept for key (malloc'd; NULL if bad);
 * a session on an upgraded socket, until the client or the server stops. */
#define SRV_WS_MAX 16
char *srv_ws_accept(const char *key);
void srv_ws_session(srv_state *s, int fd, const char *client_id, const char *extra, size_t extra_n);

/* comfy_graph.c: the node types and the graph to a job */
typedef struct srv_node_def {
    const char *type;
    const char *outputs[3];
} srv_node_def;
const srv_node_def *srv_comfy_node(const char *type); /* NULL: not one fmimage runs */
/* {"error": {type, message, details, extra_info}, "node_errors": ...} as
 * server.py's post_prompt answers; returns status */
int srv_comfy_error(int status, const char *type, const char *message, const char *details, cJSON *node_errors,
                    char **out);
/* Checks the graph from its output node out_id and fills j's settings:
 * 0, or the HTTP status with *out ComfyUI's error JSON. */
int srv_comfy_graph(srv_state *s, const cJSON *graph, const char *out_id, srv_job *j, char **out);
/* page.c */
extern const char srv_page_html[];

#endif
