/* How many of a file's tensors the parts bind: their lists (the binder's
 * list mode) against the source. For `fmimage --info`; a file of its own so
 * that detection alone (the fuzz harness) does not pull the parts in. */
#include "diffusion/detect.h"
#include "textenc/textenc.h"
#include "unet/unet.h"
#include "vae/vae.h"

typedef struct tally {
    const wt_source *src;
    int64_t bound, absent;
} tally;

static void count_tensor(void *user, const char *name, int ndim, const int64_t *shape)
{
    (void)ndim, (void)shape;
    tally *t = user;
    if (wt_find(t->src, name)) t->bound++;
    else t->absent++;
}

int df_count_bound(const wt_model_config *cfg, const wt_source *st, int64_t *bound, int64_t *absent)
{
    tally t = {st, 0, 0};
    fm_error err = {0};
    int rc = un_list_tensors(&cfg->unet, count_tensor, &t, &err) ||
             vae_list_tensors(&cfg->vae, count_tensor, &t, &err);
    for (int i = 0; !rc && i < cfg->n_text; i++)
        rc = te_tower_list_tensors(&cfg->text[i], count_tensor, &t, &err);
    *bound = t.bound;
    *absent = t.absent;
    return rc ? FM_EINPUT : 0;
}
