/* output: where images go and how they get there, without destroying what is
 * not ours or trusting what is already there (DESIGN.md "Output files").
 *
 * Every PNG is written to a temporary file made by mkstemp in its directory
 * (".fmimage-XXXXXX"), locked with flock while it is written, fsync'ed and
 * renamed into place: no reader ever sees half an image, and a temporary
 * file nobody holds a lock on belongs to a dead process. An existing name is
 * looked at with lstat: only a regular file or a symbolic link is ever
 * replaced, and a link is replaced itself, never followed.
 *
 * A batch directory's manifest is opened with O_NOFOLLOW and flock'ed around
 * every "is this job done / append its line", so racing processes write one
 * line per image; a torn last line (a writer killed mid-write) is cut off. */
#ifndef FM_CLI_OUTPUT_H
#define FM_CLI_OUTPUT_H

#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include "fmimage.h"

/* What an output name is now (lstat, a link is not followed). */
typedef enum out_kind { OUT_ABSENT, OUT_REGULAR, OUT_SYMLINK, OUT_OTHER } out_kind;
/* what: "character device", "FIFO", ... for OUT_OTHER, also for a link to
 * one (which is OUT_OTHER too: a link to /dev/null is not replaced). */
out_kind out_path_kind(const char *path, const char **what);

/* An image written to a locked temporary file, not yet in place. Signals
 * that end the run (INT, TERM, HUP) wait from out_temp_write until
 * out_temp_commit or out_temp_discard, so the file is either in place or gone. */
typedef struct out_temp {
    int fd;
    char path[4096];
    sigset_t old_mask;
} out_temp;
/* Writes the PNG into a new temporary file in dir; sha256_hex gets the
 * digest of its bytes. On failure nothing is left behind. */
int out_temp_write(out_temp *t, const char *dir, const uint8_t *rgb, int width, int height,
                   const char *parameters, char sha256_hex[65], fm_error *err);
/* Renames the temporary file to path. replace = 0: an existing name of any
 * kind is an error ("exists (use --force to overwrite)"); replace = 1: a
 * regular file or a link is replaced, anything else is refused ("not a
 * regular file"). The temporary file is gone afterwards in every case. */
int out_temp_commit(out_temp *t, const char *path, int replace, fm_error *err);
void out_temp_discard(out_temp *t);

/* A file's name without its directory and extension ("dir/v1-5.safetensors"
 * -> "v1-5"): how infotexts name models and upscalers. */
void out_file_stem(const char *path, char *buf, size_t n);

/* Creates dir (and parents) if missing. */
int out_make_dir(const char *dir, fm_error *err);

/* Removes the temporary files in dir that no process holds a lock on. */
void out_remove_stale_temps(const char *dir);

/* Whether path is a complete PNG we could have written: a regular file
 * (not a link), signature, IHDR first, well-formed chunks with valid CRCs,
 * an IDAT, IEND last and nothing after it. Returns 1 if so, with *parameters
 * (malloc'd, NULL if none) the iTXt "parameters" text and sha256_hex the
 * file's digest; 0 if not (why says what is wrong). */
int out_png_complete(const char *path, char **parameters, char sha256_hex[65], const char **why);

/* A batch's manifests: PREFIXmanifest.jsonl (unsharded runs) and
 * PREFIXmanifest.d/K-of-N.jsonl (shard K of N), merged. For each file name
 * the line that wins is the one with the largest (seq, manifest name, byte
 * position): seq is one more than every seq its writer had read, so a line
 * written after another was seen always wins over it. */
typedef struct out_manifest_entry {
    char *file, *sha256, *parameters; /* sha256/parameters: NULL if absent */
    long long seq;                    /* the line's "seq", 0 if none */
    long long bytes;                  /* the line's "bytes", -1 if none */
    const char *src;                  /* its manifest's name (one of srcs) */
    off_t pos;                        /* its byte offset there */
} out_manifest_entry;
typedef struct out_manifest {
    int fd;                       /* the file this process appends to; -1 read-only */
    char path[4096];              /* DIR/own, for messages */
    char dir[4096], prefix[256];
    const char *own;              /* own name relative to dir (one of srcs) */
    off_t read_to;                /* bytes of own already parsed */
    char **srcs;                  /* names of the manifests read, relative to dir */
    off_t *srcs_read_to;          /* bytes of each already parsed */
    size_t n_srcs;
    long long max_seq;
    int shards_seen;              /* the largest N of a K-of-N.jsonl found, else 1 */
    out_manifest_entry *slots;    /* open-addressing table by file name */
    size_t n, cap;
} out_manifest;
/* Reads every manifest of the batch in dir whose file names start with
 * prefix. own != NULL: also opens (creating) DIR/own to append to, without
 * following a link (own may be "SUB/NAME": SUB is created, and refused if a
 * link); refuses anything but a regular file with one link; cuts a torn last
 * line off (saying so on stderr). own == NULL: reads only, creates nothing.
 * Other processes' manifests are read, never written: a torn tail there is
 * a line still being written, and is not read. */
int out_manifest_open(out_manifest *m, const char *dir, const char *prefix, const char *own, fm_error *err);
/* The exclusive lock around "check done / append" (own file); lock also
 * reads the lines other processes appended to it since. */
int out_manifest_lock(out_manifest *m, fm_error *err);
/* Reads the lines appended to the other manifests since (new shards' files
 * included): when an image another process may have made is looked at. */
int out_manifest_refresh(out_manifest *m, fm_error *err);
void out_manifest_unlock(out_manifest *m);
const out_manifest_entry *out_manifest_find(const out_manifest *m, const char *file);
/* The seq for the next line this process appends. */
long long out_manifest_next_seq(const out_manifest *m);
/* Appends one line (a JSON object with "file", newline added) while locked.
 * A failed or short write is truncated back to the previous length. */
int out_manifest_append(out_manifest *m, const char *json, fm_error *err);
void out_manifest_close(out_manifest *m);

/* --only-missing: an exclusive claim on making one job, an flock on
 * DIR/.fmimage-claim-HASH held while the job is made (a dead process's claim
 * goes with it). Returns 1 and *fd when claimed, 0 when another process holds
 * it. */
int out_claim(const char *dir, const char *file, int *fd, char path[4096]);
/* Gives the claim up and removes its file. */
void out_claim_release(int fd, const char *path);

/* SHA-256 of a whole file as hex. */
int out_file_sha256(const char *path, char hex[65], fm_error *err);
/* A1111's model hash: the first 10 hex digits of the file's SHA-256, cached
 * by (path, size, mtime) in $XDG_CACHE_HOME/fmimage/hashes.tsv. */
int out_model_hash(const char *path, char hash10[11], fm_error *err);

#endif
