/* LoRA in the pipeline: the prompt's <lora:...> tags, the files they name,
 * A1111's hashes of them, and the merge the model keeps (docs/DESIGN.md
 * "LoRA"). Not installed. */
#ifndef FM_DIFFUSION_LORA_H
#define FM_DIFFUSION_LORA_H

#include "fmimage.h"
#include "weights/lora.h"

/* One adapter of a generation: a file and its multipliers; name is the
 * tag's NAME as written (A1111's mentioned_name), or the file's stem for
 * fm_params.loras. */
typedef struct df_lora_ref {
    char *name, *path;
    float te, unet;
} df_lora_ref;

typedef struct df_lora_list {
    df_lora_ref *v;
    int n;
    char *prompt; /* the prompt without its extra-network tags */
} df_lora_list;

/* A1111's extra_networks.parse_prompt: every <WORD:ARGS> tag is removed
 * from the text (re.sub of <(\w+):([^>]+)>); those of "lora" (and its
 * alias "lyco") are listed with their multipliers (ExtraNetworkParams:
 * args split at ':', "te="/"unet=" named, positional NAME, TE, UNET with
 * UNET defaulting to TE and TE to 1). Other tags are dropped, as A1111
 * skips unknown extra networks. Paths are not resolved. */
int df_lora_parse(const char *prompt, df_lora_list *out, fm_error *err);
void df_lora_list_free(df_lora_list *l);
/* Appends {name[0..nl), te, unet} to l; -1 when out of memory. */
int df_lora_add(df_lora_list *l, const char *name, size_t nl, float te, float unet);


typedef struct df_lora_file {
    char *path;
    wt_lora *lora;
} df_lora_file;

/* What a model keeps: the adapters of its current merge and the merged
 * source its text encoders and U-Net are bound to (NULL: the file). */
typedef struct df_lora_state {
    df_lora_file *files;
    int n_files;
    wt_source *merged;
    char *key;       /* the current set, "path|te|unet;..."; NULL = none */
    int broken;      /* a failed rebinding left no usable parts */
    fm_lora_info info;
} df_lora_state;

struct fm_model;
/* Makes the model's weights those of p's set (nothing to do when it is the
 * current one); *prompt gets the prompt without its tags (malloc'd). */
int df_lora_apply(struct fm_model *m, const fm_params *p, char **prompt, fm_error *err);
void df_lora_state_free(df_lora_state *s);

#endif
